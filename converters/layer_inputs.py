"""What each weight layer of a Keras model sees on calibration images, visited one layer after another.

The steps that change weights from calibration data (one-shot pruning with compensation,
least-squares reconstruction after channels are removed, compensated int8 rounding) change one
layer so that its outputs on those images move as little as possible. Each needs, per layer,
the second moments of the layer's input patches ``Σ x xᵀ`` and, when layers upstream were
changed, the cross moments ``Σ x_ref xᵀ`` with what the same layer of the reference (original)
model sees on the same images: the least-squares target is then the original layer's output,
not what the changed model happens to feed it.

:func:`walk` visits the weight layers in graph order, nested functional and Sequential models
included (transfer learning's usual shape: a pretrained base model inside the classifier, or a
small head model after pooling). Each layer's input is measured on the model *as it is when the
layer is visited*: a step that rewrites a layer during its visit changes what every later layer
sees, so errors do not pile up unseen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._tf import keras, tf

__all__ = ["LayerInputs", "Moments", "kernel_layer", "patches", "walk", "walkable"]

layers = keras.layers

_BATCH = 32
#: Output positions per batch whose patches enter the moments; beyond that a seeded sample (neighbouring
#: positions of one photo say much the same, and the early layers of a 224 px model have 200,000 a batch).
MAX_POSITIONS = 16384


def kernel_layer(layer: Any) -> bool:
    """A built Conv2D (one group, no dilation, channels last), DepthwiseConv2D (multiplier 1) or 2-D Dense layer.

    These are the layers whose output is a linear map of input patches that :func:`patches` can lay out.
    """
    if not getattr(layer, "built", False):
        return False
    if type(layer) is layers.Dense:
        return len(layer.kernel.shape) == 2
    if type(layer) not in (layers.Conv2D, layers.DepthwiseConv2D):
        return False
    if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1):
        return False
    if isinstance(layer, layers.DepthwiseConv2D):
        return layer.depth_multiplier == 1
    return layer.groups == 1


def patches(layer: Any, x: Any) -> np.ndarray:
    """The layer's input laid out as rows of what each output position multiplies.

    Returns:
        ``[positions, columns]`` in the kernel's ``(kh, kw, in)`` order for Conv2D and Dense, or
        ``[positions, kh * kw, channels]`` for DepthwiseConv2D (one small problem per channel).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    if isinstance(layer, layers.Dense):
        return tf.reshape(x, [-1, x.shape[-1]]).numpy().astype(np.float32)
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    if (kh, kw) == (1, 1) and layer.padding in ("same", "valid"):
        found = x[:, ::sh, ::sw, :]
    else:
        found = tf.image.extract_patches(x, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], layer.padding.upper())
    if isinstance(layer, layers.DepthwiseConv2D):
        return tf.reshape(found, [-1, kh * kw, x.shape[-1]]).numpy()
    return tf.reshape(found, [-1, found.shape[-1]]).numpy()  # float32, as the tensor


@dataclasses.dataclass
class Moments:
    """Accumulated input moments of one layer, in float64.

    ``inputs`` is ``Σ x xᵀ`` over input patches (``[columns, columns]``, or ``[channels, k, k]``
    for a depthwise layer); ``cross`` is ``Σ x_ref xᵀ`` against the reference layer's patches
    (``[ref columns, columns]``, or ``[channels, k, k]`` pairing each channel with the reference
    channel ``channel_map`` names); ``sums`` and ``ref_sums`` are the patch sums, for a bias;
    ``count`` is the number of patches.
    """

    inputs: np.ndarray
    cross: np.ndarray | None
    sums: np.ndarray
    ref_sums: np.ndarray | None
    count: int


class LayerInputs:
    """One visited layer, its twin in the reference model, and its inputs on the images, batch by batch."""

    def __init__(
        self,
        layer: Any,
        reference: Any | None,
        probe: Any,
        reference_probe: Any | None,
        images: np.ndarray,
        reference_images: np.ndarray | None,
    ) -> None:
        self.layer = layer
        self.reference = reference  # the same layer in the reference model (None: no reference)
        self._probe, self._reference_probe = probe, reference_probe
        self._images, self._reference_images = images, reference_images

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(input, reference input)`` per batch of images, the model's current weights computing the first."""
        for start in range(0, len(self._images), _BATCH):
            current = np.asarray(self._probe(self._images[start : start + _BATCH], training=False))
            reference = None
            if self._reference_probe is not None:
                reference = np.asarray(self._reference_probe(self._reference_images[start : start + _BATCH], training=False))
            yield current, reference

    def moments(self, channel_map: np.ndarray | None = None) -> Moments:
        """The layer's input moments, and the cross moments with the reference's input when there is one.

        Args:
            channel_map: For a depthwise layer whose channels are a subset of the reference's, the reference
                channel of each of its channels (None: the same channels).
        """
        depthwise = isinstance(self.layer, layers.DepthwiseConv2D)
        sampler = np.random.default_rng(0)
        total: Moments | None = None
        for current, reference in self.batches():
            own = patches(self.layer, current)
            ref = patches(self.reference, reference) if reference is not None else None
            if len(own) > MAX_POSITIONS:
                rows = np.sort(sampler.choice(len(own), MAX_POSITIONS, replace=False))
                own, ref = own[rows], (ref[rows] if ref is not None else None)
            if depthwise:
                if ref is not None and channel_map is not None:
                    ref = ref[..., channel_map]
                by_channel = own.transpose(2, 0, 1)  # [channels, positions, k]: one product per channel
                step = Moments(
                    _float64(np.matmul(by_channel.transpose(0, 2, 1), by_channel)),
                    _float64(np.matmul(ref.transpose(2, 1, 0), by_channel)) if ref is not None else None,
                    own.sum(axis=0, dtype=np.float64).T,
                    ref.sum(axis=0, dtype=np.float64).T if ref is not None else None,
                    len(own),
                )
            else:
                step = Moments(
                    _float64(own.T @ own),
                    _float64(ref.T @ own) if ref is not None else None,
                    own.sum(axis=0, dtype=np.float64),
                    ref.sum(axis=0, dtype=np.float64) if ref is not None else None,
                    len(own),
                )
            total = step if total is None else _add(total, step)
        if total is None:
            raise ValueError("no images to measure layer inputs on")
        return total


def _float64(product: np.ndarray) -> np.ndarray:
    """A float32 BLAS product of one batch, accumulated across batches in float64."""
    return product.astype(np.float64)


def _add(a: Moments, b: Moments) -> Moments:
    return Moments(
        a.inputs + b.inputs,
        None if a.cross is None else a.cross + b.cross,
        a.sums + b.sums,
        None if a.ref_sums is None else a.ref_sums + b.ref_sums,
        a.count + b.count,
    )


def walk(
    model: Any,
    images: np.ndarray,
    visit: Callable[[LayerInputs], None],
    wanted: Callable[[Any], bool] = kernel_layer,
    reference: Any | None = None,
    reference_images: np.ndarray | None = None,
) -> None:
    """Call ``visit`` on each wanted layer of ``model`` in graph order, nested models walked into.

    Args:
        model: A functional or Sequential Keras model with one input (changed only by ``visit``).
        images: Model inputs to measure on.
        visit: Called once per wanted layer; it may rewrite that layer's weights, and later layers see the change.
        wanted: Which layers to visit (default: the layers :func:`patches` understands).
        reference: A model of the same structure (the original, before pruning): each visit also gets its
            twin layer and that layer's inputs on the same images. Layers are paired by their place in the graph.
        reference_images: The reference's inputs (default: ``images``).
    """
    reference_images = images if reference is not None and reference_images is None else reference_images
    ordered = _graph_order(model)
    twins = _graph_order(reference) if reference is not None else [None] * len(ordered)
    if len(twins) != len(ordered):
        raise ValueError(f"model '{model.name}' and its reference '{reference.name}' differ in structure")
    graph = _functional(model)
    reference_graph = _functional(reference) if reference is not None else None
    for layer, twin in zip(ordered, twins, strict=True):
        nested = isinstance(layer, keras.Model)
        if not nested and not (wanted(layer) and _called_once(layer)):
            continue
        tensor = _call_input(layer)
        if tensor is None:
            continue
        probe = keras.Model(_single_input(graph), tensor)
        reference_probe = keras.Model(_single_input(reference_graph), _call_input(twin)) if twin is not None else None
        if nested:
            if _functional(layer) is None or len(_functional(layer).inputs) != 1:
                continue  # a subclassed model, or one with several inputs: its graph cannot be walked
            inner = _all_outputs(probe, images)
            inner_reference = _all_outputs(reference_probe, reference_images) if reference_probe is not None else None
            walk(layer, inner, visit, wanted, twin, inner_reference)
        else:
            visit(LayerInputs(layer, twin, probe, reference_probe, images, reference_images))


def walkable(model: Any) -> bool:
    """Whether :func:`walk` can visit the model: a functional or Sequential model with one input (not a subclassed one)."""
    graph = _functional(model)
    return graph is not None and len(graph.inputs) == 1


def _single_input(graph: Any) -> Any:
    if len(graph.inputs) != 1:
        raise ValueError(f"model '{graph.name}' has {len(graph.inputs)} inputs; a classifier with one image input is needed")
    return graph.inputs[0]


def _all_outputs(probe: Any, images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(probe(images[i : i + _BATCH], training=False)) for i in range(0, len(images), _BATCH)])


def _functional(model: Any) -> Any:
    """The functional graph of a Functional or Sequential model (None for subclassed models)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def _graph_order(model: Any) -> list[Any]:
    """The model's layers (nested models as one) in the order its graph computes them, each once."""
    functional = _functional(model)
    if functional is None:
        raise ValueError(f"model '{model.name}' is subclassed: its graph cannot be walked")
    seen: dict[int, Any] = {}
    for depth in sorted(functional._nodes_by_depth, reverse=True):  # noqa: SLF001 - Keras has no public graph walk
        for node in functional._nodes_by_depth[depth]:  # noqa: SLF001
            operation = node.operation
            if node.is_input or operation is None or isinstance(operation, layers.InputLayer):
                continue
            seen.setdefault(id(operation), operation)
    return list(seen.values())


def _called_once(layer: Any) -> bool:
    return len(getattr(layer, "_inbound_nodes", [])) == 1


def _call_input(layer: Any) -> Any | None:
    """The one tensor the layer is called on in its graph (None when called more than once or on several)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]
