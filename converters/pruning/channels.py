"""Structured (channel) pruning: fewer filters, so every backend does fewer multiply-adds.

The model's graph is walked once to find which channel dimensions are tied together. Each
tensor's channel axis is a *channel space*; layers that act channel by channel (BatchNorm,
activations, depthwise convolutions, pooling) pass their input's space through; ``Add`` and
``Multiply`` tie the spaces of their inputs into one group (residual blocks, squeeze-and-
excitation gates); a convolution or ``Dense`` starts a new space. A group can lose channels
only when every layer touching it is understood: the model's input and output, and any
layer not known to act channel by channel (``Concatenate``, ``Flatten``, custom layers)
freeze the groups they touch. Nested functional and Sequential models are walked into.

Pruning a group removes the same channels from every producer of the group (their output
filters), every channel-wise layer on it (BatchNorm statistics, depthwise kernels) and every
consumer (the input rows of the next convolution or ``Dense``): :mod:`.rebuild` does that.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tillsight.errors import ConversionError

from .._tf import keras

__all__ = ["ChannelGroup", "ChannelPlan", "LayerCost", "count_macs", "plan_channels"]

layers = keras.layers

PRODUCERS = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.Dense, layers.SeparableConv1D, layers.SeparableConv2D)
DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
WEIGHTED_CHANNELWISE = (layers.BatchNormalization, layers.PReLU)
_PASSTHROUGH = (
    layers.ReLU,
    layers.LeakyReLU,
    layers.ELU,
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.AlphaDropout,
    layers.ActivityRegularization,
    layers.MaxPooling1D,
    layers.MaxPooling2D,
    layers.MaxPooling3D,
    layers.AveragePooling1D,
    layers.AveragePooling2D,
    layers.AveragePooling3D,
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling3D,
    layers.ZeroPadding1D,
    layers.ZeroPadding2D,
    layers.ZeroPadding3D,
    layers.Cropping1D,
    layers.Cropping2D,
    layers.Cropping3D,
    layers.UpSampling1D,
    layers.UpSampling2D,
    layers.UpSampling3D,
    layers.Identity,
    layers.Resizing,
    layers.CenterCrop,
)
_ELEMENTWISE_MERGE = (layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum, layers.Minimum)
_CROSS_CHANNEL_ACTIVATIONS = ("softmax", "log_softmax")
# keras.ops called on one tensor in a functional graph (MobileNetV3's hard-sigmoid is x + 3, relu6, x / 6)
_ELEMENTWISE_OPS = {
    "Add",
    "Subtract",
    "Multiply",
    "Divide",
    "TrueDivide",
    "Maximum",
    "Minimum",
    "Relu",
    "Relu6",
    "Sigmoid",
    "HardSigmoid",
    "HardSilu",
    "Silu",
    "Gelu",
    "Tanh",
    "Abs",
    "Square",
    "Sqrt",
    "Exp",
    "Negative",
    "Clip",
}


@dataclasses.dataclass
class ChannelGroup:
    """Channel dimensions that must lose the same channels."""

    size: int
    producers: list[Any] = dataclasses.field(default_factory=list)  # layers whose output filters make the group
    channelwise: list[Any] = dataclasses.field(default_factory=list)  # BatchNorm, depthwise, PReLU on the group
    consumers: list[Any] = dataclasses.field(default_factory=list)  # layers reading the group as input channels
    frozen_by: str = ""  # why the group cannot be pruned ("" when it can)
    keep: np.ndarray | None = None  # kept channel indices, ascending (None: all)

    @property
    def name(self) -> str:
        """The group's producer layer names."""
        return "+".join(sorted(layer.name for layer in self.producers)) or "(input)"

    @property
    def kept(self) -> int:
        """Channels left after pruning."""
        return self.size if self.keep is None else len(self.keep)


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One convolution's or Dense layer's multiply-adds, and the groups they scale with."""

    macs: int
    inputs: ChannelGroup | None  # the group of its input channels
    outputs: ChannelGroup | None  # the group of its output filters (None: a depthwise layer, one filter per input)

    def kept(self) -> float:
        """The multiply-adds left with the groups' current ``keep`` (exact: they are linear in each channel count)."""
        share = 1.0
        for group in (self.inputs, self.outputs):
            if group is not None:
                share *= group.kept / group.size
        return self.macs * share


@dataclasses.dataclass
class ChannelPlan:
    """The model's channel groups and, once chosen, which channels each keeps."""

    model: Any
    groups: list[ChannelGroup]
    input_group: dict[int, ChannelGroup]  # id(layer) -> the group of its (first) input channels
    output_group: dict[int, ChannelGroup]  # id(layer) -> the group of its output channels
    costs: list[LayerCost]  # every convolution and Dense call with multiply-adds

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one forward pass of the planned model."""
        return sum(cost.macs for cost in self.costs)

    def kept_macs(self) -> float:
        """Multiply-adds of one forward pass once the chosen channels are gone."""
        return sum(cost.kept() for cost in self.costs)

    @property
    def prunable(self) -> list[ChannelGroup]:
        """Groups whose channels may be removed."""
        return [group for group in self.groups if not group.frozen_by]

    def report(self) -> dict[str, Any]:
        """Channels before and after per pruned group, JSON-ready."""
        prunable = self.prunable
        before = sum(group.size for group in prunable)
        after = sum(group.kept for group in prunable)
        return {
            "groups": len(self.groups),
            "prunable_groups": len(prunable),
            "prunable_channels": before,
            "kept_channels": after,
            "removed_fraction": round(1.0 - after / before, 4) if before else 0.0,
            "per_group": {group.name: [group.size, group.kept] for group in prunable},
        }


class _Spaces:
    """Union-find over channel spaces; a frozen member freezes its whole group."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.frozen_by: list[str] = []

    def new(self, size: int | None, frozen_by: str = "") -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size or 0))
        self.frozen_by.append(frozen_by if size else frozen_by or "unknown channel count")
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def freeze(self, space: int, reason: str) -> None:
        root = self.find(space)
        self.frozen_by[root] = self.frozen_by[root] or reason

    def union(self, first: int, second: int) -> int:
        a, b = self.find(first), self.find(second)
        if a == b:
            return a
        if self.size[a] != self.size[b]:
            self.freeze(a, "tied to a different channel count")
            self.freeze(b, "tied to a different channel count")
        self.parent[b] = a
        self.frozen_by[a] = self.frozen_by[a] or self.frozen_by[b]
        return a


class _Walker:
    """Assigns a channel space to every tensor of a functional graph, recording each layer's role."""

    def __init__(self) -> None:
        self.spaces = _Spaces()
        self.roles: dict[int, tuple[str, Any, list[int], list[int]]] = {}  # id(layer) -> role, layer, ins, outs
        self.macs: list[tuple[Any, int]] = []  # (layer, multiply-adds) per call

    def walk(self, model: Any, input_spaces: Sequence[int]) -> list[int]:
        functional = _functional(model)
        space_of = {id(tensor): space for tensor, space in zip(functional.inputs, input_spaces, strict=True)}
        for depth in sorted(functional._nodes_by_depth, reverse=True):  # noqa: SLF001 - Keras has no public graph walk
            for node in functional._nodes_by_depth[depth]:  # noqa: SLF001
                if node.is_input or node.operation is None:
                    continue
                inputs = [space_of[id(tensor)] for tensor in node.input_tensors]
                outputs = self._visit(node.operation, node, inputs)
                space_of.update({id(tensor): space for tensor, space in zip(node.outputs, outputs, strict=True)})
        return [space_of[id(tensor)] for tensor in functional.outputs]

    def _record(self, role: str, layer: Any, inputs: list[int], outputs: list[int]) -> None:
        previous = self.roles.get(id(layer))
        if previous is not None:  # a shared layer: its weights tie every call's channels together
            for old, new in zip(previous[2] + previous[3], inputs + outputs, strict=True):
                self.spaces.union(old, new)
            return
        self.roles[id(layer)] = (role, layer, inputs, outputs)

    def _frozen(self, layer: Any, node: Any, inputs: list[int], reason: str) -> list[int]:
        for space in inputs:
            self.spaces.freeze(space, reason)
        outputs = [self.spaces.new(_channels(tensor), reason) for tensor in node.outputs]
        self._record("other", layer, inputs, outputs)
        return outputs

    def _visit(self, layer: Any, node: Any, inputs: list[int]) -> list[int]:
        kind = f"layer '{layer.name}' ({type(layer).__name__})"
        if isinstance(layer, keras.Model):
            if _functional(layer) is None:
                return self._frozen(layer, node, inputs, f"{kind} is a subclassed model")
            outputs = self.walk(layer, inputs)
            self._record("nested", layer, inputs, outputs)  # rebuilt on an input as wide as its group keeps
            return outputs
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return self._frozen(layer, node, inputs, f"{kind} is channels-first")
        if len(inputs) != 1 and not _is_merge(layer):
            return self._frozen(layer, node, inputs, f"{kind} combines several inputs other than elementwise")
        self.macs.append((layer, _macs(layer, node)))
        if isinstance(layer, PRODUCERS) and getattr(layer, "groups", 1) == 1 and getattr(layer, "depth_multiplier", 1) == 1:
            output = self.spaces.new(_channels(node.outputs[0]))
            self._record("producer", layer, inputs, [output])
            return [output]
        if isinstance(layer, DEPTHWISE) and layer.depth_multiplier == 1 or isinstance(layer, WEIGHTED_CHANNELWISE):
            if isinstance(layer, layers.BatchNormalization) and layer.axis not in (-1, len(node.outputs[0].shape) - 1):
                return self._frozen(layer, node, inputs, f"{kind} normalises another axis")
            self._record("channelwise", layer, inputs, inputs)
            return inputs
        if _passes_channels(layer, node):
            self._record("passthrough", layer, inputs, inputs)
            return inputs
        if _is_merge(layer):
            widths = {_channels(tensor) for tensor in node.input_tensors} | {_channels(node.outputs[0])}
            if len(widths) != 1 or len(inputs) < 2 or not _scalar_constants(node):
                return self._frozen(layer, node, inputs, f"{kind} broadcasts or mixes constants over channels")
            merged = inputs[0]
            for space in inputs[1:]:
                merged = self.spaces.union(merged, space)
            self._record("merge", layer, inputs, [merged])
            return [merged]
        return self._frozen(layer, node, inputs, f"{kind} is not known to act channel by channel")


def _functional(model: Any) -> Any:
    """The functional graph of a Functional or Sequential model (None for subclassed models)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def _channels(tensor: Any) -> int | None:
    shape = tuple(tensor.shape)
    return int(shape[-1]) if shape and shape[-1] is not None else None


def _is_merge(layer: Any) -> bool:
    """An elementwise layer or op over several tensors of the same channels."""
    return isinstance(layer, _ELEMENTWISE_MERGE) or (
        not isinstance(layer, layers.Layer) and type(layer).__name__ in _ELEMENTWISE_OPS
    )


def _passes_channels(layer: Any, node: Any) -> bool:
    """A weightless layer that keeps each channel independent of the others."""
    if isinstance(layer, _PASSTHROUGH):
        return True
    if isinstance(layer, layers.Activation):
        return not any(name in str(layer.get_config().get("activation")) for name in _CROSS_CHANNEL_ACTIVATIONS)
    if isinstance(layer, layers.Rescaling):
        return np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0
    if isinstance(layer, layers.Reshape):  # e.g. (C,) -> (1, 1, C) in squeeze-and-excitation blocks
        return _channels(node.input_tensors[0]) == _channels(node.outputs[0])
    if not isinstance(layer, layers.Layer) and type(layer).__name__ in _ELEMENTWISE_OPS:  # keras.ops in the graph
        return _scalar_constants(node)  # x + 3.0, x * (1 / 6)
    return False


def _scalar_constants(node: Any) -> bool:
    """Every non-tensor argument of the call is a scalar (a vector constant would mix per-channel values)."""
    constants = [value for value in keras.tree.flatten(node.arguments.args) if not isinstance(value, keras.KerasTensor)]
    return all(np.ndim(value) == 0 for value in constants)


def _macs(layer: Any, node: Any) -> int:
    """Multiply-accumulates of one call of a convolution or Dense layer: output positions x kernel size."""
    if not isinstance(layer, (*PRODUCERS, *DEPTHWISE)):
        return 0
    positions = math.prod(int(d) for d in tuple(node.outputs[0].shape)[1:-1] if d is not None)
    kernels = [w for w in layer.weights if w.name in ("kernel", "depthwise_kernel", "pointwise_kernel")]
    return sum(positions * math.prod(tuple(kernel.shape)) for kernel in kernels)


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass (convolutions and Dense layers) of a functional model.

    Raises:
        ConversionError: The model is subclassed.
    """
    return plan_channels(model).macs


def plan_channels(model: Any) -> ChannelPlan:
    """Find the channel groups of a functional or Sequential Keras model.

    Raises:
        ConversionError: The model is subclassed (its graph cannot be read).
    """
    functional = _functional(model)
    if functional is None:
        raise ConversionError(
            f"model '{model.name}' is a subclassed Keras model: channel pruning needs a functional or Sequential "
            "model (build it with keras.Input), or use unstructured pruning"
        )
    walker = _Walker()
    outputs = walker.walk(model, [walker.spaces.new(_channels(t), "model input") for t in functional.inputs])
    for space in outputs:
        walker.spaces.freeze(space, "model output")
    spaces = walker.spaces
    groups: dict[int, ChannelGroup] = {}

    def group_of(space: int) -> ChannelGroup:
        root = spaces.find(space)
        if root not in groups:
            groups[root] = ChannelGroup(size=spaces.size[root], frozen_by=spaces.frozen_by[root])
        return groups[root]

    input_group: dict[int, ChannelGroup] = {}
    output_group: dict[int, ChannelGroup] = {}

    def _role(layer: Any) -> str:
        return walker.roles[id(layer)][0]

    for role, layer, inputs, outputs_ in walker.roles.values():
        if inputs:
            input_group[id(layer)] = group_of(inputs[0])
        if outputs_:
            output_group[id(layer)] = group_of(outputs_[0])
        if role == "producer":
            group_of(inputs[0]).consumers.append(layer)
            group_of(outputs_[0]).producers.append(layer)
        elif role == "channelwise":
            group_of(inputs[0]).channelwise.append(layer)
    for group in groups.values():
        if not group.frozen_by and group.size < 2:
            group.frozen_by = "a single channel"
    costs = [
        LayerCost(macs, input_group.get(id(layer)), output_group.get(id(layer)) if _role(layer) == "producer" else None)
        for layer, macs in walker.macs
        if macs
    ]
    return ChannelPlan(model, list(groups.values()), input_group, output_group, costs)
