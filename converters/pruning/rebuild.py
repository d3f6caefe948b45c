"""Rebuilding a model without the channels a :class:`~.channels.ChannelPlan` removes.

Every layer is rebuilt from its config with ``keras.models.clone_model`` (producers with fewer
filters) and given its weights sliced to the kept channels: output filters of producers,
channel-wise weights (BatchNorm statistics, depthwise kernels), input rows of consumers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tillsight.errors import ConversionError

from .._tf import keras
from .channels import DEPTHWISE, WEIGHTED_CHANNELWISE, ChannelPlan

__all__ = ["apply_plan"]

layers = keras.layers


def _slice(values: np.ndarray, axis: int, keep: np.ndarray | None) -> np.ndarray:
    return values if keep is None else np.take(values, keep, axis=axis)


def _sliced_weights(
    layer: Any, keep_in: np.ndarray | None, keep_out: np.ndarray | None, full: list[np.ndarray] | None = None
) -> list[np.ndarray]:
    """The layer's weights (or ``full``, values in the same order) with removed input and output channels taken out."""
    sliced = []
    separable = isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D))
    channelwise = isinstance(layer, (*DEPTHWISE, *WEIGHTED_CHANNELWISE))
    full = full if full is not None else [np.asarray(weight.numpy()) for weight in layer.weights]
    for weight, values in zip(layer.weights, full, strict=True):
        if channelwise:
            axis = -2 if weight.name == "kernel" else -1  # depthwise kernels are (..., channels, 1)
            values = _slice(values, axis, keep_in)
        elif weight.name == "kernel" or (separable and weight.name == "pointwise_kernel"):
            values = _slice(_slice(values, -2, keep_in), -1, keep_out)
        elif separable and weight.name == "depthwise_kernel":
            values = _slice(values, -2, keep_in)
        elif weight.name == "bias":
            values = _slice(values, -1, keep_out)
        sliced.append(values)
    return sliced


def apply_plan(plan: ChannelPlan, weights: dict[int, tuple[Any, list[np.ndarray]]] | None = None) -> Any:
    """Rebuild the model without the removed channels, weights sliced to match.

    Args:
        plan: The planned model and the channels each group keeps.
        weights: Full-size weight values to slice instead of some layers' own (by ``id(layer)``), such as
            :func:`~.compensation.removal_weights`.

    Returns:
        A new Keras model; the planned model is not changed.

    Raises:
        ConversionError: A layer cannot be rebuilt from its config.
    """
    pairs: list[tuple[Any, Any]] = []

    def rebuild(layer: Any) -> Any:
        if isinstance(layer, keras.Model):  # a nested model, on an input as wide as the channels it gets
            return _nested(layer)
        config = layer.get_config()
        group = plan.output_group.get(id(layer))
        if group is not None and group.keep is not None:
            if any(layer is producer for producer in group.producers):
                config["units" if isinstance(layer, layers.Dense) else "filters"] = int(len(group.keep))
            elif isinstance(layer, layers.Reshape):  # the channel count is part of the target shape
                config["target_shape"] = (*tuple(config["target_shape"])[:-1], int(len(group.keep)))
        try:
            clone = type(layer).from_config(config)
        except Exception as exc:  # custom layers without a faithful get_config
            raise ConversionError(
                f"layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt from its config ({exc}); "
                "give it a get_config() or use unstructured pruning"
            ) from exc
        pairs.append((layer, clone))
        return clone

    def _nested(model: Any) -> Any:
        source = model.inputs[0]
        group = plan.input_group.get(id(model))
        shape = tuple(source.shape)
        if group is not None and group.keep is not None:
            shape = (*shape[:-1], int(len(group.keep)))
        inputs = keras.Input(batch_shape=shape, dtype=source.dtype, name=source.name)
        return keras.models.clone_model(model, input_tensors=inputs, clone_function=rebuild)

    pruned = keras.models.clone_model(plan.model, clone_function=rebuild)
    for original, clone in pairs:
        if not getattr(original, "weights", None):
            continue
        in_group, out_group = plan.input_group.get(id(original)), plan.output_group.get(id(original))
        keep_in = in_group.keep if in_group is not None else None
        keep_out = out_group.keep if out_group is not None else None
        full = (weights or {}).get(id(original), (None, None))[1]
        clone.set_weights(_sliced_weights(original, keep_in, keep_out, full))
    return pruned
