"""Unstructured magnitude pruning on Keras 3: the smallest weights of each kernel become zero.

Every Conv, DepthwiseConv, SeparableConv and Dense kernel gets a mask. The masked share of
each kernel follows a polynomial-decay schedule from 0 to the target during fine-tuning
(Zhu & Gupta, 2017, the schedule TensorFlow Model Optimization uses), so the network can
adapt while weights are taken away. The mask is a Keras variable constraint, which the
optimizer applies right after every update inside the compiled train step: pruned weights
stay zero at every step. :meth:`MagnitudePruner.strip` removes the constraints, leaving a
plain Keras model whose kernels hold zeros.

Sparsity alone does not make dense int8 kernels faster; it makes the model file compress
(downloads, over-the-air updates, storage on the device).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._tf import keras

__all__ = ["MagnitudePruner", "SparsitySchedule", "prunable_kernels", "sparsity_report"]

_KERNEL_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)
_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


@dataclasses.dataclass(frozen=True)
class SparsitySchedule:
    """Polynomial decay from ``initial`` to ``target`` sparsity between two training steps."""

    target: float
    end_step: int  # the target is reached here and held afterwards
    begin_step: int = 0
    initial: float = 0.0
    power: float = 3.0
    frequency: int = 1  # masks are recomputed every this many steps (and at the end step)

    def sparsity_at(self, step: int) -> float:
        """The sparsity the masks should have at ``step``."""
        if step <= self.begin_step and self.end_step > self.begin_step:
            return self.initial
        if step >= self.end_step:
            return self.target
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.target + (self.initial - self.target) * (1.0 - progress) ** self.power

    def updates_at(self, step: int) -> bool:
        """Whether the masks are recomputed before ``step``."""
        return self.begin_step <= step <= self.end_step and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end_step
        )

    @classmethod
    def for_training(cls, target: float, total_steps: int) -> SparsitySchedule:
        """Reach the target after two thirds of the steps; the last third recovers with fixed masks."""
        end = max(0, int(total_steps * 2 / 3))
        return cls(target=target, end_step=end, frequency=max(1, end // 20))


def prunable_kernels(model: Any) -> list[tuple[str, Any]]:
    """``(layer name/weight name, variable)`` for every kernel that magnitude pruning masks."""
    kernels = []
    for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001 - nested models too
        if isinstance(layer, _KERNEL_LAYERS):
            kernels.extend((f"{layer.name}/{w.name}", w) for w in layer.trainable_weights if w.name in _KERNEL_NAMES)
    return sorted(kernels, key=lambda item: item[0])


class _Mask:
    """``kernel * mask`` as a variable constraint (applied by the optimizer after each update)."""

    def __init__(self, mask: Any, previous: Any) -> None:
        self.mask = mask
        self.previous = previous

    def __call__(self, value: Any) -> Any:
        value = self.previous(value) if self.previous is not None else value
        return value * self.mask


class MagnitudePruner:
    """Masks on a model's kernels, updated by a schedule while the model trains.

    Use :meth:`callback` in ``model.fit``; call :meth:`strip` when training is over.
    """

    def __init__(self, model: Any, schedule: SparsitySchedule) -> None:
        self.model = model
        self.schedule = schedule
        self.kernels = prunable_kernels(model)
        self._masks: list[Any] = []
        for _name, kernel in self.kernels:
            mask = keras.Variable(np.ones(tuple(kernel.shape), np.float32), trainable=False, name="prune_mask")
            kernel.constraint = _Mask(mask, kernel.constraint)
            self._masks.append(mask)
        self.sparsity = 0.0

    def set_sparsity(self, sparsity: float) -> None:
        """Zero the ``sparsity`` share of smallest-magnitude weights in every kernel, and keep them zero."""
        for (_name, kernel), mask in zip(self.kernels, self._masks, strict=True):
            values = np.asarray(kernel.numpy())
            count = int(round(sparsity * values.size))
            new_mask = np.ones(values.size, np.float32)
            if count:
                new_mask[np.argsort(np.abs(values), axis=None, kind="stable")[:count]] = 0.0
            mask.assign(new_mask.reshape(values.shape))
            kernel.assign(values * new_mask.reshape(values.shape))
        self.sparsity = sparsity

    def hold_zeros(self) -> None:
        """Mask exactly the weights that are zero now (pruned in one shot), so training keeps them zero."""
        for (_name, kernel), mask in zip(self.kernels, self._masks, strict=True):
            mask.assign((np.asarray(kernel.numpy()) != 0.0).astype(np.float32))
        self.sparsity = float(np.mean([np.mean(np.asarray(mask.numpy()) == 0.0) for mask in self._masks])) if self._masks else 0.0

    def callback(self) -> keras.callbacks.Callback:
        """A ``fit`` callback that follows the schedule, counting steps over epochs."""
        pruner = self

        class _Schedule(keras.callbacks.Callback):
            step = 0

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                if pruner.schedule.updates_at(self.step):
                    pruner.set_sparsity(pruner.schedule.sparsity_at(self.step))
                self.step += 1

        return _Schedule()

    def strip(self) -> None:
        """Remove the masks' constraints; the zeros stay in the kernels."""
        if not self._masks:
            return
        for (_name, kernel), mask in zip(self.kernels, self._masks, strict=True):
            constraint = kernel.constraint
            kernel.assign(np.asarray(kernel.numpy()) * np.asarray(mask.numpy()))
            kernel.constraint = constraint.previous if isinstance(constraint, _Mask) else constraint
        self._masks.clear()


def sparsity_report(model: Any) -> dict[str, Any]:
    """Achieved share of zero weights, overall and per kernel, JSON-ready."""
    per_kernel: dict[str, float] = {}
    zeros = total = 0
    for name, kernel in prunable_kernels(model):
        values = np.asarray(kernel.numpy())
        kernel_zeros = int(np.count_nonzero(values == 0))
        per_kernel[name] = round(kernel_zeros / values.size, 4)
        zeros += kernel_zeros
        total += values.size
    return {"sparsity": round(zeros / total, 4) if total else 0.0, "pruned_weights": total, "per_kernel": per_kernel}
