"""Which channels channel pruning keeps: each channel is scored, the lowest-scoring go.

:func:`choose_channels` sets ``keep`` on every prunable group of a :class:`~.channels.ChannelPlan`,
per group or across the model, by filter L1 norm or BatchNorm gamma; kept counts are rounded to
the profile's channel multiple.

How much each group loses is the ``scope``'s choice. ``layer`` takes the same share from every
group, ``global`` the weakest channels wherever they are. ``measured`` removes the multiply-adds
that ``layer`` would, but takes them where the model's outputs change least, as tried on a few
calibration images (:func:`choose_channels_by_damage`). Groups differ a lot: on the sample
EfficientNet-Lite0 (81.08% val top-1), taking 30% from one group alone left between 17.91%
(the residual stream of blocks 1-2) and 80.41% (block 6's expansion).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tillsight.profiles import ChannelCriterion, PruningScope

from .._tf import keras
from .channels import ChannelGroup, ChannelPlan

logger = logging.getLogger(__name__)

layers = keras.layers

__all__ = ["DAMAGE_LEVELS", "choose_channels", "choose_channels_by_damage"]

#: The shares of one group's channels whose removal :func:`choose_channels_by_damage` tries.
DAMAGE_LEVELS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


def _filter_l1(layer: Any) -> np.ndarray:
    """L1 norm of each output filter of a producer."""
    name = "pointwise_kernel" if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)) else "kernel"
    kernel = next(w for w in layer.weights if w.name == name)
    values = np.abs(np.asarray(kernel.numpy(), dtype=np.float64))
    return values.reshape(-1, values.shape[-1]).sum(axis=0)


#: Group id -> its channels in the order they can go (:func:`~.compensation.elimination_order`).
Orders = dict[int, np.ndarray]


def _scores(group: ChannelGroup, criterion: ChannelCriterion, orders: Orders | None = None) -> np.ndarray:
    """Per-channel importance, each contributing layer normalised to mean 1."""
    order = (orders or {}).get(id(group))
    if criterion is ChannelCriterion.RECONSTRUCTION and order is not None:
        rank = np.empty(group.size)
        rank[order] = np.arange(1, group.size + 1)  # the last to go is the most needed
        return rank / rank.mean()
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
    plan: ChannelPlan,
    fraction: float,
    scope: PruningScope,
    criterion: ChannelCriterion,
    multiple: int = 1,
    orders: Orders | None = None,
) -> None:
    """Set ``keep`` on every prunable group: the highest-scoring channels stay.

    Args:
        plan: From :func:`plan_channels`.
        fraction: Share of the prunable channels to remove, in [0, 1).
        scope: Per group, or across the whole model.
        criterion: How channels are ranked.
        multiple: Kept channel counts are rounded to a multiple of this (1: exact).
        orders: Each group's elimination order, for the ``reconstruction`` criterion (L1 for groups without one).
    """
    prunable = plan.prunable
    if scope is PruningScope.MEASURED:
        raise ValueError("the measured scope needs a damage trial: use choose_channels_by_damage")
    scores = {id(group): _scores(group, criterion, orders) for group in prunable}
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


def _strongest(scores: np.ndarray, count: int) -> np.ndarray:
    return np.sort(np.argsort(-scores, kind="stable")[:count])


def choose_channels_by_damage(
    plan: ChannelPlan,
    fraction: float,
    criterion: ChannelCriterion,
    multiple: int,
    damage: Callable[[ChannelGroup], float],
    orders: Orders | None = None,
) -> dict[str, Any]:
    """Set ``keep`` so as to remove the multiply-adds the ``layer`` scope would, where ``damage`` says it hurts least.

    Each group is tried alone at each of :data:`DAMAGE_LEVELS` (its weakest channels by ``criterion``
    going first). Then, greedily, the group whose next level costs the least damage per multiply-add
    saved loses that level, until the model is as small as ``layer`` pruning would make it.

    Args:
        plan: From :func:`plan_channels`.
        fraction: The ``layer`` scope's share, which sets the multiply-adds to remove.
        criterion: How channels are ranked within a group.
        multiple: Kept channel counts are rounded to a multiple of this (1: exact).
        damage: How much the model's outputs change with only this group's ``keep`` applied (0: not at all).
        orders: Each group's elimination order, for the ``reconstruction`` criterion.

    Returns:
        What was tried: the levels, the trials run and each group's damage at the level it got.
    """
    choose_channels(plan, fraction, PruningScope.LAYER, criterion, multiple, orders)
    target = plan.kept_macs()
    levels = {id(group): _tried_levels(group, _scores(group, criterion, orders), multiple, damage) for group in plan.prunable}
    reached = {id(group): 0 for group in plan.prunable}  # levels taken; 0: untouched
    while plan.kept_macs() > target:
        group = _cheapest_step(plan, levels, reached)
        if group is None:  # every group at its deepest level
            logger.warning(
                "channels %.0f%%: every group is at its most (%.0f%% of its channels), so the model keeps more multiply-adds "
                'than asked; scope = "layer" cuts every group to the target',
                100 * fraction,
                100 * DAMAGE_LEVELS[-1],
            )
            break
        reached[id(group)] += 1
        group.keep = levels[id(group)][reached[id(group)] - 1][0]
    return {
        "levels": list(DAMAGE_LEVELS),
        "trials": sum(len(each) for each in levels.values()),
        "damage": {
            group.name: round(levels[id(group)][reached[id(group)] - 1][1], 5) for group in plan.prunable if reached[id(group)]
        },
    }


def _tried_levels(
    group: ChannelGroup, scores: np.ndarray, multiple: int, damage: Callable[[ChannelGroup], float]
) -> list[tuple[np.ndarray, float]]:
    """``(keep, damage)`` at each of :data:`DAMAGE_LEVELS`, fewer channels each step; the group keeps all afterwards."""
    counts = {_aligned(group.size - int(round(share * group.size)), group.size, multiple) for share in DAMAGE_LEVELS}
    tried = []
    for count in sorted((count for count in counts if count < group.size), reverse=True):
        group.keep = np.sort(np.argsort(-scores, kind="stable")[:count])
        tried.append((group.keep, float(damage(group))))
    group.keep = None
    return tried


def _cheapest_step(
    plan: ChannelPlan, levels: dict[int, list[tuple[np.ndarray, float]]], reached: dict[int, int]
) -> ChannelGroup | None:
    """The group whose next level adds the least damage per multiply-add it saves (None: no group can go further)."""
    before = plan.kept_macs()
    best: tuple[float, ChannelGroup] | None = None
    for group in plan.prunable:
        taken, tried = reached[id(group)], levels[id(group)]
        if taken >= len(tried):
            continue
        current, group.keep = group.keep, tried[taken][0]
        saved = before - plan.kept_macs()
        group.keep = current
        if saved > 0:
            cost = (tried[taken][1] - (tried[taken - 1][1] if taken else 0.0)) / saved
            if best is None or cost < best[0]:
                best = (cost, group)
    return best[1] if best is not None else None
