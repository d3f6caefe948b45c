"""BatchNorm statistics of a trained model that is about to train again.

A classifier fine-tuned with BatchNorm frozen, as Keras's transfer-learning guide does, keeps
ImageNet's moving statistics while its weights move on: its later layers learned to work with
statistics that are not those of its inputs. Trained further with batch statistics, as every
fine-tuning step does, it breaks. The sample EfficientNet-Lite0 (81.08% val top-1) gives the
same top class with batch statistics as with its moving ones on 5 of 32 of its own photos, and
pruned then fine-tuned that way it kept 12.5% top-1.

:func:`rebase_statistics` rewrites each BatchNorm so that its moving statistics are those of
its inputs on a few photos, and its scale and offset give the very same outputs. The model
computes what it did; batch statistics now agree with the moving ones (the sample: 31 of 32),
so it can fine-tune, and after pruning :func:`reestimate_statistics` can measure the smaller
model's statistics without breaking it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .._tf import keras

__all__ = [
    "STATISTICS_IMAGES",
    "batchnorm_layers",
    "frozen_batchnorm",
    "input_moments",
    "input_tensor",
    "rebase_statistics",
    "rebased_statistics",
    "reestimate_statistics",
]


#: Photos that measure BatchNorm statistics (up to; per-channel moments settle well before this).
STATISTICS_IMAGES = 128


def batchnorm_layers(model: Any) -> Iterator[Any]:
    """Every BatchNormalization layer of a Keras model, nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from batchnorm_layers(layer)


def input_tensor(layer: Any) -> Any | None:
    """The tensor the layer is called on, in the graph that calls it (None for a layer called more than once).

    A nested model's own ``input`` is the ``keras.Input`` of its inner graph, which the outer graph
    cannot reach; the tensor it is called on in the outer graph is what a probe must ask for.
    """
    if isinstance(layer, keras.Model):
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            return None
        return nodes[0].input_tensors[0]
    try:
        return layer.input
    except (AttributeError, ValueError):
        return None


def _owns(model: Any, layer: Any) -> bool:
    return any(inner is layer or (isinstance(inner, keras.Model) and _owns(inner, layer)) for inner in model.layers)


def input_moments(
    model: Any, wanted: Iterable[Any], images: np.ndarray, batch_size: int = 16
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance of each wanted layer's input over ``images`` and positions (inference mode).

    Nested models are walked into; layers called more than once are left out.
    """
    wanted = [layer for layer in wanted if input_tensor(layer) is not None]
    sums: dict[int, Any] = {}

    def visit(graph: Any, inputs: np.ndarray) -> None:
        direct = [layer for layer in wanted if any(layer is inner for inner in graph.layers)]
        nested = [inner for inner in graph.layers if isinstance(inner, keras.Model) and input_tensor(inner) is not None]
        nested = [inner for inner in nested if any(_owns(inner, layer) for layer in wanted)]
        tensors = [input_tensor(layer) for layer in (*direct, *nested)]
        if not tensors:
            return
        probe = keras.Model(graph.inputs[0] if len(graph.inputs) == 1 else graph.inputs, tensors)
        values = probe(inputs, training=False)
        values = [np.asarray(value) for value in (values if isinstance(values, (list, tuple)) else [values])]
        for layer, value in zip(direct, values, strict=False):
            flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
            total, squares, count = sums.get(id(layer), (0.0, 0.0, 0))
            sums[id(layer)] = (total + flat.sum(axis=0), squares + np.square(flat).sum(axis=0), count + len(flat))
        for inner, value in zip(nested, values[len(direct) :], strict=True):
            visit(inner, value)

    for start in range(0, len(images), batch_size):
        visit(model, np.asarray(images[start : start + batch_size], np.float32))
    moments = {}
    for key, (total, squares, count) in sums.items():
        mean = total / count
        moments[key] = (mean.astype(np.float32), np.maximum(squares / count - np.square(mean), 0.0).astype(np.float32))
    return moments


def rebase_statistics(model: Any, images: np.ndarray) -> int:
    """Give every BatchNorm its inputs' statistics on ``images`` as moving statistics, outputs unchanged.

    ``gamma * (x - m) / s + beta`` becomes ``gamma' * (x - m') / s' + beta'`` with ``m', s'`` the
    measured mean and deviation, ``gamma' = gamma * s' / s`` and ``beta' = beta + gamma * (m' - m) / s``.
    One pass measures all layers: each rewrite leaves every output as it was.

    Returns:
        How many layers were rewritten (a layer called more than once, or without scale and offset, is left).
    """
    norms = [layer for layer in batchnorm_layers(model) if layer.scale and layer.center]
    moments = input_moments(model, norms, images)
    for layer in norms:
        if id(layer) not in moments:
            continue
        mean, variance = moments[id(layer)]
        values = {weight.name: np.asarray(weight.numpy()) for weight in layer.weights}
        old_std = np.sqrt(values["moving_variance"] + layer.epsilon)
        new_std = np.sqrt(variance + layer.epsilon)
        values["beta"] = values["beta"] + values["gamma"] * (mean - values["moving_mean"]) / old_std
        values["gamma"] = values["gamma"] * new_std / old_std
        values["moving_mean"], values["moving_variance"] = mean, variance
        layer.set_weights([values[weight.name] for weight in layer.weights])
    return len(moments)


@contextlib.contextmanager
def rebased_statistics(model: Any, images: np.ndarray) -> Iterator[int]:
    """:func:`rebase_statistics` inside the block (it yields the count); the model's own BatchNorm weights come back after."""
    saved = [(layer, layer.get_weights()) for layer in batchnorm_layers(model)]
    try:
        yield rebase_statistics(model, images)
    finally:
        for layer, weights in saved:
            layer.set_weights(weights)


def reestimate_statistics(model: Any, images: np.ndarray, batch_size: int = 32) -> None:
    """Measure every BatchNorm's moving statistics afresh on ``images`` (after pruning changed its inputs).

    Each batch runs in training mode with a momentum that makes the moving statistics the running
    average of all batches so far; the weights are not trained.
    """
    norms = list(batchnorm_layers(model))
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    try:
        for layer in norms:
            layer.trainable = True  # a frozen BatchNorm ignores training=True and would measure nothing
        for step, start in enumerate(range(0, len(images), batch_size)):
            for layer in norms:
                layer.momentum = step / (step + 1)
            model(np.asarray(images[start : start + batch_size], np.float32), training=True)
    finally:
        for layer, (momentum, trainable) in zip(norms, saved, strict=True):
            layer.momentum, layer.trainable = momentum, trainable


@contextlib.contextmanager
def frozen_batchnorm(model: Any) -> Iterator[int]:
    """Every BatchNorm of ``model`` in inference mode inside the block (its moving statistics, not trained); yields the count.

    A pretrained model recovering from pruning keeps the statistics its layers were refit to; batch
    statistics of a few thousand photos in batches of 32 move with every step.
    """
    norms = [(layer, layer.trainable) for layer in batchnorm_layers(model)]
    try:
        for layer, _ in norms:
            layer.trainable = False  # Keras 3: a non-trainable BatchNorm normalises with its moving statistics
        yield len(norms)
    finally:
        for layer, trainable in norms:
            layer.trainable = trainable
