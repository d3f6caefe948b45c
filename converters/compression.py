"""The conversion's training steps, before quantization: prune, fine-tune, distill, QAT.

Which steps run is the profile's (or the options') choice: ``[pruning]`` with a target,
``[distillation] enabled`` (pruning's fine-tuning also learns from the original float
model) and ``[qat] enabled`` (quantization-aware fine-tuning, TFLite and Edge TPU only).
The teacher is always the original float model: its outputs on the fine-tuning photos
are computed once and shared by every step. The checks run before any work, so a bad
combination fails in a second, not after an hour of training.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.bundle import OutputActivation
from tillsight.bundle_metrics import PruningMetrics, QatMetrics
from tillsight.datasets import ImageSet, read_image_set
from tillsight.errors import ConversionError, DataError
from tillsight.preprocess import InputSpec
from tillsight.profiles import BackendKind, Profile

from .pruning import prune
from .steps import conversion_step
from .training import TeacherCache, TrainingSchedule, load_training_photos, quantization_aware_finetune, seeded

__all__ = ["Compressed", "compress", "training_set"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Compressed:
    """What the training steps made of the source model."""

    source: Any  # the SourceModel to convert
    pruned: Any | None  # the pruned float SourceModel (before QAT), for the accuracy steps
    pruning: PruningMetrics | None = None
    qat: QatMetrics | None = None


def training_set(profile: Profile, source: Any, finetune: str | Path | None, labels: Sequence[str] | None) -> ImageSet | None:
    """The fine-tuning photos, checked before any work when the conversion trains.

    Raises:
        ConversionError: A SavedModel source, or QAT on a backend that does not take it.
        DataError: Photos are needed and missing, or labels are needed and missing.
    """
    finetunes = profile.pruning.enabled and profile.pruning.epochs > 0
    qat = profile.qat.enabled
    if qat and profile.backend not in (BackendKind.TFLITE, BackendKind.EDGETPU):
        raise ConversionError(
            f"profile '{profile.name}' converts with {profile.backend.value}, which quantizes with its own tools; "
            "--qat is for TFLite and Edge TPU profiles"
        )
    if (profile.pruning.enabled or qat) and source.keras_model is None:
        raise ConversionError(
            f"{source.description} is a SavedModel, which cannot be pruned or fine-tuned; convert the .keras or .h5 "
            "file instead, or drop --prune / --qat"
        )
    if not (finetunes or qat):
        if profile.distillation.enabled:
            logger.warning("distillation is on but nothing fine-tunes: it applies to pruning's fine-tuning (add --prune)")
        if finetune is not None:
            why = "prunes in one shot (0 fine-tuning epochs)" if profile.pruning.enabled else "neither prunes nor runs QAT"
            logger.warning("fine-tuning data %s is not used: profile '%s' %s", finetune, profile.name, why)
        return None
    if finetune is None:
        step = "quantization-aware fine-tuning" if not finetunes else f"{profile.pruning.mode.value} pruning's fine-tuning"
        raise DataError(
            f"{step} needs photos: pass --finetune DATA (a class folder or list file; a folder of unlabeled frames is "
            "enough for --qat and --distill)" + (", or --finetune-epochs 0 to prune in one shot" if finetunes and not qat else "")
        )
    photos = read_image_set(finetune, labels)
    if finetunes and not photos.labeled and not profile.distillation.enabled:
        raise DataError(
            f"fine-tuning data {finetune} has no labels: use a class folder or a list file, or add --distill to learn "
            "from the original model on unlabeled photos"
        )
    return photos


def compress(
    profile: Profile,
    source: Any,
    photos_set: ImageSet | None,
    float_spec: InputSpec,
    activation: OutputActivation,
    calibration: np.ndarray,
    progress: bool,
    timings: dict[str, float],
    seed: int = 0,
) -> Compressed:
    """Run the profile's training steps on the source model.

    Args:
        profile: Its ``pruning``, ``distillation`` and ``qat`` tables decide.
        source: The original SourceModel (left unchanged; it is the teacher).
        photos_set: From :func:`training_set`.
        float_spec: The model's float input spec.
        activation: What the model outputs.
        calibration: Preprocessed calibration images (channel pruning's trials, QAT's starting activation ranges).
        progress: Progress bars.
        timings: Step timings, updated.
        seed: Seeds every random choice of the training steps (TensorFlow's ops made deterministic too).

    Returns:
        The model to convert, the pruned float model when pruning ran, and their reports.
    """
    qat = profile.qat.enabled
    photos = teacher = None
    if photos_set is not None:
        seeded(seed)
        with conversion_step("fine-tuning photos", timings):
            photos = load_training_photos(
                photos_set, float_spec, source.num_classes, progress, need_labels=False, desc="fine-tuning photos"
            )
        if qat or profile.distillation.enabled:
            with conversion_step("teacher outputs", timings):
                teacher = TeacherCache(source.keras_model, photos, activation, progress)
    current, pruned, qat_metrics = source, None, None
    if profile.pruning.enabled:
        teaches = teacher if profile.distillation.enabled else None
        pruned = _prune(profile, source, photos, teaches, activation, calibration, progress, timings, seed)
        current = pruned.model
    if qat:
        settings = profile.qat
        with conversion_step(f"quantization-aware fine-tuning ({settings.epochs} epochs)", timings):
            imitate = dataclasses.replace(profile.distillation, alpha=0.0)  # the float model's outputs only
            model, report = quantization_aware_finetune(
                current.keras_model,
                photos,
                calibration,
                teacher,
                activation,
                imitate,
                TrainingSchedule(settings.epochs, settings.learning_rate, progress=progress),
                profile.quantization.per_channel,
            )
        qat_metrics = QatMetrics.from_report({**report, "finetune_source": str(photos_set.path), "seed": seed})
        current = current.with_model(model, "quantization-aware")
    if pruned is None:
        return Compressed(current, None, qat=qat_metrics)
    return Compressed(current, pruned.model, pruned.report, qat_metrics)


@dataclasses.dataclass(frozen=True)
class _Pruned:
    model: Any  # SourceModel
    report: PruningMetrics


def _prune(
    profile: Profile,
    source: Any,
    photos: Any,
    teacher: Any,
    activation: OutputActivation,
    calibration: np.ndarray,
    progress: bool,
    timings: dict[str, float],
    seed: int,
) -> _Pruned:
    """The pruned, fine-tuned (or distilled) source model and the pruning report."""
    pruning, distillation = profile.pruning, profile.distillation
    setting = f"{pruning.mode.value}:{pruning.fraction:g}"
    how = " and distill" if teacher is not None and pruning.epochs else (" and fine-tune" if photos is not None else "")
    with conversion_step(f"prune ({setting}){how}", timings):
        result = prune(
            source.keras_model,
            pruning,
            photos,
            activation,
            progress,
            teacher=teacher,
            distillation=distillation,
            images=calibration,
        )
    report = {**result.report, "finetune_source": str(photos.path) if photos is not None else None, "seed": seed}
    return _Pruned(source.with_model(result.model, f"pruned {setting}"), PruningMetrics.from_report(report))
