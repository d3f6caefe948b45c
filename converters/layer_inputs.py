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

__all__ = ["LayerInputs", "Moments", "kernel_layer", "output_positions", "patches", "walk", "walkable"]

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


def patches(layer: Any, x: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
    """The layer's input laid out as rows of what each output position multiplies.

    Args:
        layer: A layer :func:`kernel_layer` accepts.
        x: What the layer is fed: ``[batch, height, width, channels]``, or ``[..., features]`` for Dense.
        positions: Which output positions to lay out, as flat indices over :func:`output_positions`
            (None: all of them).

    Returns:
        ``[positions, columns]`` in the kernel's ``(kh, kw, in)`` order for Conv2D and Dense, or
        ``[channels, kh * kw, positions]`` for DepthwiseConv2D (one small problem per channel).
    """
    x = np.asarray(x, np.float32)
    if isinstance(layer, layers.Dense):
        rows = x.reshape(-1, x.shape[-1])
        return rows if positions is None else rows[positions]
    batch, height, width, channels = x.shape
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    out_height, out_width = _output_grid(layer, height, width)
    if positions is None:
        positions = np.arange(batch * out_height * out_width)
    image, row, column = np.unravel_index(positions, (batch, out_height, out_width))
    if layer.padding == "same":  # zeros around the input, as TensorFlow pads
        x = np.pad(x, ((0, 0), _same_padding(height, out_height, kh, sh), _same_padding(width, out_width, kw, sw), (0, 0)))
    padded_height, padded_width = x.shape[1:3]

    def at(dy: int, dx: int) -> np.ndarray:  # where each position's input under kernel tap (dy, dx) is, in the flat input
        return (image * padded_height + row * sh + dy) * padded_width + column * sw + dx

    flat = x.reshape(-1, channels)
    if isinstance(layer, layers.DepthwiseConv2D):  # channels first, so each channel's product is one BLAS call
        by_channel = np.empty((channels, kh, kw, len(positions)), np.float32)
        for dy in range(kh):
            for dx in range(kw):
                by_channel[:, dy, dx] = np.take(flat, at(dy, dx), axis=0).T
        return by_channel.reshape(channels, kh * kw, len(positions))
    found = np.empty((len(positions), kh, kw, channels), np.float32)
    for dy in range(kh):
        for dx in range(kw):
            found[:, dy, dx] = np.take(flat, at(dy, dx), axis=0)
    return found.reshape(len(positions), kh * kw * channels)


def output_positions(layer: Any, shape: tuple[int, ...]) -> int:
    """How many output positions (rows of :func:`patches`) the layer has on an input of this shape."""
    if isinstance(layer, layers.Dense):
        return int(np.prod(shape[:-1]))
    batch, height, width, _ = shape
    out_height, out_width = _output_grid(layer, height, width)
    return batch * out_height * out_width


def _output_grid(layer: Any, height: int, width: int) -> tuple[int, int]:
    """The convolution's output height and width on an input of this size, as Keras computes them."""

    def size(length: int, kernel: int, stride: int) -> int:
        return -(-length // stride) if layer.padding == "same" else -(-(length - kernel + 1) // stride)

    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    return size(height, kh, sh), size(width, kw, sw)


def _same_padding(size: int, out: int, kernel: int, stride: int) -> tuple[int, int]:
    """Zeros "same" padding puts before and after the input along one axis (the odd one after)."""
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


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
    """One visited layer, its twin in the reference model, and what each of them is fed on the images."""

    def __init__(self, layer: Any, reference: Any | None, inputs: Any, reference_inputs: Any | None) -> None:
        self.layer = layer
        self.reference = reference  # the same layer in the reference model (None: no reference)
        self._inputs, self._reference_inputs = inputs, reference_inputs

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(input, reference input)`` per batch of images, the first computed by the model's weights as they are now."""
        for start in range(0, len(self._inputs), _BATCH):
            current = np.asarray(self._inputs[start : start + _BATCH])
            reference = None
            if self._reference_inputs is not None:
                reference = np.asarray(self._reference_inputs[start : start + _BATCH])
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
            count = output_positions(self.layer, current.shape)
            rows = np.sort(sampler.choice(count, MAX_POSITIONS, replace=False)) if count > MAX_POSITIONS else None
            own = patches(self.layer, current, rows)
            ref = patches(self.reference, reference, rows) if reference is not None else None
            if depthwise:
                if ref is not None and channel_map is not None:
                    ref = ref[channel_map]
                step = Moments(  # one product per channel: [channels, k, positions] @ [channels, positions, k]
                    _float64(np.matmul(own, own.transpose(0, 2, 1))),
                    _float64(np.matmul(ref, own.transpose(0, 2, 1))) if ref is not None else None,
                    own.sum(axis=2, dtype=np.float64),
                    ref.sum(axis=2, dtype=np.float64) if ref is not None else None,
                    own.shape[2],
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

    The images go through the model once, operation by operation, as Keras's own functional call
    runs them: a wanted layer is visited when its input has been computed, before its output is,
    so what it outputs (and every later layer sees) comes from the weights its visit left. Each
    intermediate result is kept, for all images, until the last operation that reads it has run.

    Args:
        model: A functional or Sequential Keras model with one input (changed only by ``visit``).
        images: Model inputs to measure on.
        visit: Called once per wanted layer; it may rewrite that layer's weights (and the BatchNorm it feeds),
            and later layers see the change.
        wanted: Which layers to visit (default: the layers :func:`patches` understands).
        reference: A model of the same structure (the original, before pruning): each visit also gets its
            twin layer and that layer's inputs on the same images. Layers are paired by their place in the graph.
        reference_images: The reference's inputs (default: ``images``).
    """
    reference_images = images if reference is not None and reference_images is None else reference_images
    _Pass(visit, wanted).run(model, images, reference, reference_images)


class _Pass:
    """One forward pass through a model (and its reference, in step) that visits the wanted layers on the way."""

    def __init__(self, visit: Callable[[LayerInputs], None], wanted: Callable[[Any], bool]) -> None:
        self.visit, self.wanted = visit, wanted

    def run(self, model: Any, images: Any, reference: Any | None, reference_images: Any | None) -> tuple[list[Any], list[Any]]:
        """The model's (and the reference's) output values on the images, each wanted layer visited on the way."""
        graph = _functional(model)
        if graph is None:
            raise ValueError(f"model '{model.name}' is subclassed: its graph cannot be walked")
        nodes = _computed_nodes(graph)
        twins: list[Any] = [None] * len(nodes)
        values = _Values(graph, nodes, images)
        reference_values = None
        if reference is not None:
            reference_graph = _functional(reference)
            if reference_graph is None or len(twins := _computed_nodes(reference_graph)) != len(nodes):
                raise ValueError(f"model '{model.name}' and its reference '{reference.name}' differ in structure")
            reference_values = _Values(reference_graph, twins, reference_images)  # one input, as the model's
        for node, twin in zip(nodes, twins, strict=True):
            operation = node.operation
            inputs = node.input_tensors
            single = len(inputs) == 1 and len(operation._inbound_nodes) == 1  # noqa: SLF001 - one call, on one tensor
            if single and isinstance(operation, keras.Model) and walkable(operation):
                own = values.read(inputs[0])
                other = reference_values.read(twin.input_tensors[0]) if reference_values is not None else None
                outputs, reference_outputs = self.run(operation, own, twin.operation if twin else None, other)
                values.done(node, outputs)
                if reference_values is not None:
                    reference_values.done(twin, reference_outputs)
                continue
            if single and not isinstance(operation, keras.Model) and self.wanted(operation):
                other = reference_values.read(twin.input_tensors[0]) if reference_values is not None else None
                self.visit(LayerInputs(operation, twin.operation if twin else None, values.read(inputs[0]), other))
            values.done(node, _call(node, values))
            if reference_values is not None:
                reference_values.done(twin, _call(twin, reference_values))
        return values.outputs(), reference_values.outputs() if reference_values is not None else []


class _Values:
    """What a graph's tensors hold on the images, each kept until the last node that reads it has run."""

    def __init__(self, graph: Any, nodes: list[Any], images: Any) -> None:
        self.graph = graph
        if len(graph.inputs) != 1:
            raise ValueError(f"model '{graph.name}' has {len(graph.inputs)} inputs; a classifier with one image input is needed")
        self.held = {id(graph.inputs[0]): tf.cast(images, graph.inputs[0].dtype)}
        self.readers: dict[int, int] = {}  # tensor -> nodes (and model outputs) still to read it
        for tensor in [t for node in nodes for t in node.input_tensors] + list(graph.outputs):
            self.readers[id(tensor)] = self.readers.get(id(tensor), 0) + 1

    def read(self, tensor: Any) -> Any:
        return self.held[id(tensor)]

    def done(self, node: Any, outputs: Any) -> None:
        """Keep the node's outputs; let go of the inputs nothing later reads."""
        for tensor, value in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
            self.held[id(tensor)] = value
        for tensor in node.input_tensors:
            self.readers[id(tensor)] -= 1
            if not self.readers[id(tensor)]:
                del self.held[id(tensor)]

    def outputs(self) -> list[Any]:
        return [self.held[id(tensor)] for tensor in self.graph.outputs]


def _computed_nodes(graph: Any) -> list[Any]:
    """The graph's nodes in the order its functional call runs them (those its input reaches)."""
    reached = {id(tensor) for tensor in graph.inputs}
    found = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):  # noqa: SLF001 - Keras has no public graph walk
        for node in graph._nodes_by_depth[depth]:  # noqa: SLF001
            if node.is_input or node.operation is None or isinstance(node.operation, layers.InputLayer):
                continue
            if all(id(tensor) in reached for tensor in node.input_tensors):
                found.append(node)
                reached.update(id(tensor) for tensor in node.outputs)
    return found


def _call(node: Any, values: _Values) -> Any:
    """The node's operation on the held values, in inference mode, as a functional model's call runs it."""
    args, kwargs = node.arguments.fill_in(values.held)
    operation = node.operation
    if "training" in getattr(operation, "_call_context_args", ()) or getattr(operation, "_call_has_training_arg", False):
        kwargs["training"] = False
    return operation(*args, **kwargs)


def walkable(model: Any) -> bool:
    """Whether :func:`walk` can visit the model: a functional or Sequential model with one input (not a subclassed one)."""
    graph = _functional(model)
    return graph is not None and len(graph.inputs) == 1


def _functional(model: Any) -> Any:
    """The functional graph of a Functional or Sequential model (None for subclassed models)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None
