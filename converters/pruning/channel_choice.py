"""Which channels channel pruning keeps: each channel is scored, the lowest-scoring go.

:func:`choose_channels` sets ``keep`` on every prunable group of a :class:`~.channels.ChannelPlan`,
per group or across the model, by filter L1 norm or BatchNorm gamma; kept counts are rounded to
the profile's channel multiple.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tillsight.profiles import ChannelCriterion, PruningScope

from .._tf import keras
from .channels import ChannelGroup, ChannelPlan

layers = keras.layers

__all__ = ["choose_channels"]


def _filter_l1(layer: Any) -> np.ndarray:
    """L1 norm of each output filter of a producer."""
    name = "pointwise_kernel" if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)) else "kernel"
    kernel = next(w for w in layer.weights if w.name == name)
    values = np.abs(np.asarray(kernel.numpy(), dtype=np.float64))
    return values.reshape(-1, values.shape[-1]).sum(axis=0)


def _scores(group: ChannelGroup, criterion: ChannelCriterion) -> np.ndarray:
    """Per-channel importance, each contributing layer normalised to mean 1."""
    parts: list[np.ndarray] = []
    if criterion is ChannelCriterion.BN_GAMMA:
        parts = [
            np.abs(layer.gamma.numpy().astype(np.float64))
            for layer in group.channelwise
            if isinstance(layer, layers.BatchNormalization) and layer.scale
        ]
    if not parts:
        parts = [_filter_l1(layer) for layer in group.producers]
    return sum(part / (part.mean() + 1e-12) for part in parts)


def _aligned(count: int, size: int, multiple: int) -> int:
    """``count`` rounded to the nearest multiple of ``multiple`` (SIMD lanes, Edge TPU tiles), within 1..size."""
    if multiple <= 1 or size <= multiple:
        return min(size, max(1, count))
    return min(size, max(multiple, int(round(count / multiple)) * multiple))


def choose_channels(
    plan: ChannelPlan, fraction: float, scope: PruningScope, criterion: ChannelCriterion, multiple: int = 1
) -> None:
    """Set ``keep`` on every prunable group: the highest-scoring channels stay.

    Args:
        plan: From :func:`plan_channels`.
        fraction: Share of the prunable channels to remove, in [0, 1).
        scope: Per group, or across the whole model.
        criterion: How channels are ranked.
        multiple: Kept channel counts are rounded to a multiple of this (1: exact).
    """
    prunable = plan.prunable
    scores = {id(group): _scores(group, criterion) for group in prunable}
    if scope is PruningScope.GLOBAL and prunable:
        pooled = np.sort(np.concatenate([scores[id(group)] for group in prunable]))
        threshold = pooled[min(len(pooled) - 1, int(fraction * len(pooled)))] if fraction > 0 else -np.inf
    for group in prunable:
        group_scores = scores[id(group)]
        if scope is PruningScope.GLOBAL:
            keep_count = int(np.sum(group_scores >= threshold))
            keep_count = max(keep_count, math.ceil(0.1 * group.size), 1)  # never empty a layer
        else:
            keep_count = max(1, group.size - int(round(fraction * group.size)))
        order = np.argsort(-group_scores, kind="stable")
        group.keep = np.sort(order[: _aligned(keep_count, group.size, multiple)])
