"""Pruning a float Keras classifier the profile's way, then fine-tuning it (or distilling into it)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from tillsight.bundle import OutputActivation
from tillsight.errors import ConversionError
from tillsight.profiles import ChannelCriterion, DistillationOptions, PruningMode, PruningOptions, PruningScope

from .._tf import keras, tf
from ..training import (
    STATISTICS_IMAGES,
    TeacherCache,
    TrainingPhotos,
    TrainingSchedule,
    fine_tune,
    frozen_batchnorm,
    kd_loss,
    rebased_statistics,
    train_student,
)
from ..training.distillation import logits_of
from .channel_choice import choose_channels, choose_channels_by_damage
from .channels import ChannelGroup, ChannelPlan, count_macs, plan_channels
from .compensation import consumer_moments, elimination_order, removal_weights, weights_applied
from .magnitude import MagnitudePruner, SparsitySchedule, sparsity_report
from .rebuild import apply_plan
from .reconstruction import reconstruct
from .sparse import measured_sparsity, one_shot_sparsity

__all__ = ["TRIAL_IMAGES", "PruneResult", "prune"]

logger = logging.getLogger(__name__)

#: Of the images that measure BatchNorm statistics, those each trial of the ``measured`` scope runs on.
TRIAL_IMAGES = 32

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
    images: np.ndarray | None = None,
) -> PruneResult:
    """Prune a float Keras classifier and fine-tune it.

    Args:
        model: The float Keras model (left unchanged).
        options: Mode, target fraction and fine-tuning settings.
        photos: Fine-tuning photos (``None`` only when ``options.epochs`` is 0); labeled unless distilling.
        activation: What the model outputs (``softmax``, ``softmax-added``, ``sigmoid``): picks the loss.
        progress: Progress bars per fine-tuning epoch.
        teacher: The original model's cached outputs on ``photos``: fine-tuning distills from them.
        distillation: Alpha and temperature of the distillation loss.
        images: Preprocessed images (calibration; else some of ``photos`` are used). BatchNorm statistics are
            measured on them (:mod:`..training.batchnorm`), removed channels' means are folded into the next
            layer, and the ``measured`` scope tries its choices on them. Without any, none of that happens.

    Returns:
        The pruned model and a JSON-ready report (achieved sparsity or channels, parameters, MACs, fine-tuning).

    Raises:
        ConversionError: Nothing in the model can be pruned the requested way.
    """
    epochs = options.epochs if photos is not None else 0
    images = _statistics_images(images, photos)
    training = _Training(photos, activation, options, progress, teacher, distillation)
    report: dict[str, Any] = {
        "mode": options.mode.value,
        "fraction": options.fraction,
        "parameters_before": int(model.count_params()),
    }
    # BatchNorm statistics rebased on the images: the same outputs, and statistics that batches agree
    # with, so the pruned model can be re-measured and fine-tuned
    if options.mode is PruningMode.CHANNELS:
        with rebased_statistics(model, images) if images is not None else contextlib.nullcontext(0) as rebased:
            pruned = _without_channels(model, options, images, activation, report)
        report["batchnorm_rebased"] = rebased
        if epochs:
            report["finetune"] = training.run(pruned, epochs)
    elif options.mode is PruningMode.UNSTRUCTURED:
        pruned = _copy(model)
        if images is not None:  # zeros chosen and compensated layer by layer, then held through the recovery
            per_layer = None
            if options.scope is PruningScope.MEASURED:  # zeros where the outputs change least, tried on the images
                per_layer = measured_sparsity(
                    model, images, options.fraction, _output_change(model, images[:TRIAL_IMAGES], activation)
                )
            report["one_shot"] = one_shot_sparsity(pruned, model, images, options.fraction, per_layer)
            report["scope"] = options.scope.value if per_layer is not None else PruningScope.LAYER.value
            pruner = MagnitudePruner(pruned, SparsitySchedule(options.fraction, 0))
            pruner.hold_zeros()
            if epochs:
                report["finetune"] = training.run(pruned, epochs, [])
        else:  # nothing to measure on: the smallest weights go, on a schedule while the model fine-tunes
            steps = epochs * photos.steps_per_epoch() if photos is not None else 0
            pruner = MagnitudePruner(pruned, SparsitySchedule.for_training(options.fraction, steps))
            if epochs:
                report["finetune"] = training.run(pruned, epochs, [pruner.callback()])
            pruner.set_sparsity(options.fraction)  # exact target, also in one shot
        pruner.strip()
        report.update(sparsity_report(pruned))
    else:
        raise ConversionError(f"pruning mode '{options.mode.value}' does not prune")
    report["parameters_after"] = int(pruned.count_params())
    return PruneResult(pruned, report)


def _without_channels(
    model: Any, options: PruningOptions, images: np.ndarray | None, activation: OutputActivation, report: dict[str, Any]
) -> Any:
    """The model rebuilt without the channels the options choose, removed means folded in, BatchNorm re-measured.

    The trials of the ``measured`` scope change ``model``'s weights for a moment; ``report`` gets the plan.
    """
    plan = plan_channels(model)
    if not plan.prunable:
        reasons = sorted({group.frozen_by for group in plan.groups})
        raise ConversionError(
            f"no channel of model '{model.name}' can be removed ({'; '.join(reasons[:3])}); "
            "use unstructured pruning for this architecture"
        )
    choice, moments = _choose(plan, options, images, activation)
    pruned = apply_plan(plan, removal_weights(plan, plan.prunable, moments))
    if images is not None:  # every layer refit to the original's outputs, in graph order
        report["reconstruction"] = reconstruct(pruned, model, images, _kept_outputs(plan))
    report.update(
        scope=choice.pop("scope"),
        criterion=options.criterion.value,
        channel_multiple=options.channel_multiple,
        choice=choice,
        **plan.report(),
    )
    report["macs_before"], report["macs_after"] = plan.macs, count_macs(pruned)  # the plan walked the original
    return pruned


def _kept_outputs(plan: ChannelPlan) -> Callable[[Any], np.ndarray | None]:
    """The original output channels a layer of the plan's model keeps (None: all of them)."""

    def kept(layer: Any) -> np.ndarray | None:
        group = plan.output_group.get(id(layer))
        return None if group is None else group.keep

    return kept


def _statistics_images(images: np.ndarray | None, photos: TrainingPhotos | None) -> np.ndarray | None:
    if images is not None and len(images):
        return np.asarray(images[:STATISTICS_IMAGES], np.float32)
    if photos is not None and len(photos.labels):
        return photos.sample(STATISTICS_IMAGES)
    return None


def _choose(
    plan: ChannelPlan, options: PruningOptions, images: np.ndarray | None, activation: OutputActivation
) -> tuple[dict[str, Any], dict[int, Any]]:
    """Set each group's ``keep`` the options' way; returns what was tried and the consumers' input moments."""
    moments = consumer_moments(plan, images) if images is not None else {}
    scope, criterion = options.scope, options.criterion
    if images is None and (scope is PruningScope.MEASURED or criterion is ChannelCriterion.RECONSTRUCTION):
        logger.warning("no images to measure channels on: every group loses the same share of its weakest filters (L1)")
        scope, criterion = (PruningScope.LAYER if scope is PruningScope.MEASURED else scope), ChannelCriterion.L1
    orders = None
    if criterion is ChannelCriterion.RECONSTRUCTION:
        orders = {id(group): order for group in plan.prunable if (order := elimination_order(group, moments)) is not None}
    choice: dict[str, Any] = {"scope": scope.value, "images": 0 if images is None else len(images)}
    if scope is PruningScope.MEASURED:
        damage = _group_change(plan, moments, images[:TRIAL_IMAGES], activation)
        choice.update(choose_channels_by_damage(plan, options.fraction, criterion, options.channel_multiple, damage, orders))
    else:
        choose_channels(plan, options.fraction, scope, criterion, options.channel_multiple, orders)
    return choice, moments


def _output_change(model: Any, images: np.ndarray, activation: OutputActivation) -> Callable[[], float]:
    """How far ``model``'s outputs on ``images`` have moved (mean KL divergence) from what they are now."""
    ops = keras.ops
    forward = tf.function(lambda batch: logits_of(model(batch, training=False), activation))  # traced once: the trials
    batch = tf.constant(images)  # only assign new values to the same variables
    reference = forward(batch)
    none = ops.zeros((len(images),))

    def damage() -> float:
        logits = forward(batch)
        change = kd_loss(logits, reference, reference, none, 0.0, 1.0, multi_label=activation == OutputActivation.SIGMOID)
        return float(ops.convert_to_numpy(ops.mean(change)))

    return damage


def _group_change(
    plan: ChannelPlan, moments: dict[int, Any], images: np.ndarray, activation: OutputActivation
) -> Callable[[ChannelGroup], float]:
    """How far the model's outputs move when one group loses its removed channels (the kept ones refit)."""
    change = _output_change(plan.model, images, activation)

    def damage(group: ChannelGroup) -> float:
        with weights_applied(removal_weights(plan, [group], moments)):
            return change()

    return damage


@dataclasses.dataclass(frozen=True)
class _Training:
    """How a pruned model wins back accuracy: fine-tuning on labels, or distillation when there is a teacher."""

    photos: TrainingPhotos
    activation: OutputActivation
    options: PruningOptions
    progress: bool
    teacher: TeacherCache | None
    distillation: DistillationOptions

    def run(self, model: Any, epochs: int, callbacks: Any = ()) -> dict[str, Any]:
        """Train ``model`` in place, BatchNorm in inference mode (the statistics the layers were refit to)."""
        schedule = TrainingSchedule(epochs, self.options.learning_rate, callbacks, self.progress)
        with frozen_batchnorm(model):
            if self.teacher is None:
                return fine_tune(model, self.photos, self.activation, schedule)
            schedule = dataclasses.replace(schedule, desc="fine-tune (distilled)")
            return train_student(model, self.teacher, self.photos, self.activation, self.distillation, schedule)
