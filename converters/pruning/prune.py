"""Pruning a float Keras classifier the profile's way, then fine-tuning it (or distilling into it)."""

from __future__ import annotations

import dataclasses
from typing import Any

from tillsight.bundle import OutputActivation
from tillsight.errors import ConversionError
from tillsight.profiles import DistillationOptions, PruningMode, PruningOptions

from .._tf import keras
from ..training import TeacherCache, TrainingPhotos, fine_tune, train_student
from .channel_choice import choose_channels
from .channels import apply_plan, count_macs, plan_channels
from .magnitude import MagnitudePruner, SparsitySchedule, sparsity_report

__all__ = ["PruneResult", "prune"]

_DEFAULT_DISTILLATION = DistillationOptions()  # the loss's alpha and temperature; used only with a teacher


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """The pruned (and fine-tuned) float model and what was done to it."""

    model: Any  # keras.Model
    report: dict[str, Any]


def _copy(model: Any) -> Any:
    """A separate model with the same architecture and weights."""
    clone = keras.models.clone_model(model, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def prune(
    model: Any,
    options: PruningOptions,
    photos: TrainingPhotos | None,
    activation: OutputActivation,
    progress: bool = False,
    teacher: TeacherCache | None = None,
    distillation: DistillationOptions = _DEFAULT_DISTILLATION,
) -> PruneResult:
    """Prune a float Keras classifier and fine-tune it.

    Args:
        model: The float Keras model (left unchanged).
        options: Mode, target fraction and fine-tuning settings.
        photos: Fine-tuning photos (``None`` only when ``options.finetune_epochs`` is 0); labeled unless distilling.
        activation: What the model outputs (``softmax``, ``softmax-added``, ``sigmoid``): picks the loss.
        progress: Progress bars per fine-tuning epoch.
        teacher: The original model's cached outputs on ``photos``: fine-tuning distills from them.
        distillation: Alpha and temperature of the distillation loss.

    Returns:
        The pruned model and a JSON-ready report (achieved sparsity or channels, parameters, MACs, fine-tuning).

    Raises:
        ConversionError: Nothing in the model can be pruned the requested way.
    """
    epochs = options.finetune_epochs if photos is not None else 0
    report: dict[str, Any] = {
        "mode": options.mode.value,
        "target": options.target,
        "parameters_before": int(model.count_params()),
    }
    if options.mode is PruningMode.CHANNELS:
        plan = plan_channels(model)
        if not plan.prunable:
            reasons = sorted({group.frozen_by for group in plan.groups})
            raise ConversionError(
                f"no channel of model '{model.name}' can be removed ({'; '.join(reasons[:3])}); "
                "use unstructured pruning for this architecture"
            )
        choose_channels(plan, options.target, options.scope, options.criterion, options.channel_multiple)
        pruned = apply_plan(plan)
        report.update(
            scope=options.scope.value, criterion=options.criterion.value, channel_multiple=options.channel_multiple,
            **plan.report(),
        )
        report["macs_before"], report["macs_after"] = plan.macs, count_macs(pruned)  # the plan walked the original
        if epochs:
            report["finetune"] = _train(pruned, photos, activation, epochs, options, (), progress, teacher, distillation)
    elif options.mode is PruningMode.UNSTRUCTURED:
        pruned = _copy(model)
        steps = epochs * photos.steps_per_epoch() if photos is not None else 0
        pruner = MagnitudePruner(pruned, SparsitySchedule.for_training(options.target, steps))
        if epochs:
            report["finetune"] = _train(
                pruned, photos, activation, epochs, options, [pruner.callback()], progress, teacher, distillation
            )
        pruner.set_sparsity(options.target)  # exact target, also in one shot
        pruner.strip()
        report.update(sparsity_report(pruned))
    else:
        raise ConversionError(f"pruning mode '{options.mode.value}' does not prune")
    report["parameters_after"] = int(pruned.count_params())
    return PruneResult(pruned, report)


def _train(
    model: Any,
    photos: TrainingPhotos,
    activation: OutputActivation,
    epochs: int,
    options: PruningOptions,
    callbacks: Any,
    progress: bool,
    teacher: TeacherCache | None,
    distillation: DistillationOptions,
) -> dict[str, Any]:
    """Fine-tune on the labels, or distill from the teacher's cached outputs when there is one."""
    if teacher is None:
        return fine_tune(model, photos, activation, epochs, options.learning_rate, callbacks, progress)
    return train_student(
        model, teacher, photos, activation, distillation.alpha, distillation.temperature, epochs, options.learning_rate,
        callbacks, progress, desc="fine-tune (distilled)",
    )
