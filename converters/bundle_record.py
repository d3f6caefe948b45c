"""What a written bundle records: its manifest, its accuracy against the profile's tolerance, its budgets and sizes.

:func:`tillsight.convert` (:mod:`.conversion`) calls these once the target has written the model
into the staging folder and before the bundle is moved into place.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tillsight._version import __version__
from tillsight.benchmarking import budget_checks
from tillsight.bundle import (
    ArtifactRecord,
    Manifest,
    OutputActivation,
    OutputSpec,
    RuntimeSettings,
    SourceModelRecord,
    gzip_bytes,
)
from tillsight.bundle_metrics import AccuracyMetrics, BundleMetrics, LatencyMetrics, PruningMetrics
from tillsight.classifier import load_written
from tillsight.conversion_options import ConversionOptions
from tillsight.errors import AccuracyError, DataError
from tillsight.profiles import BackendKind, Precision, Profile, PruningMode

from . import ConversionJob, TargetResult
from .evaluate import evaluate, measure_latency
from .source import SourceModel
from .steps import conversion_step

__all__ = ["check_budgets", "checked_accuracy", "manifest_of", "measure", "with_sizes"]

logger = logging.getLogger(__name__)


def manifest_of(
    profile: Profile,
    source: Any,
    labels: Sequence[str],
    result: Any,
    activation: OutputActivation,
    staging: Path,
    calibration: dict[str, Any],
) -> Manifest:
    """The manifest of the model just written to ``staging``; ``calibration`` says what it was calibrated on."""
    tensor_out = result.output_tensor
    artifacts = {name: ArtifactRecord.of(staging / name) for name in result.files}
    size = sum(record.bytes for record in artifacts.values())
    return Manifest(
        profile_name=profile.name,
        labels=tuple(labels),
        input=result.input_spec,
        output=OutputSpec(len(labels), tensor_out.dtype, tensor_out.scale, tensor_out.zero_point, activation),
        runtime=RuntimeSettings(
            profile.backend, result.model_file, profile.threads, profile.backend_fallbacks, profile.device, result.runtime_options
        ),
        artifacts=artifacts,
        profile=profile,
        source_model=SourceModelRecord(source.description, source.format, source.sha256),
        quantization={**result.quantization, **calibration},
        metrics=BundleMetrics(model_bytes=size),
        target_report=dict(result.report),
        sdk_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def check_budgets(profile: Profile, model_bytes: int) -> dict[str, Any]:
    """The profile's budgets against the bundle: the model size checked here, latency and memory left to the device."""
    budgets = profile.budgets
    checks: dict[str, Any] = {}
    for size in budget_checks({"max_model_bytes": budgets.max_model_bytes}, {"max_model_bytes": (model_bytes, "model file")}):
        checks["model_bytes"] = {"limit": budgets.max_model_bytes, "actual": model_bytes, "within": size.within}
        if not size.within:
            logger.warning("model %s is over profile '%s' budget", size.shortfall(), profile.name)
    if budgets.max_latency_ms:
        checks["latency_ms"] = {"limit": budgets.max_latency_ms, "note": "check on the device; host latency is not comparable"}
    if budgets.max_memory_bytes:
        checks["memory_bytes"] = {"limit": budgets.max_memory_bytes, "note": "check on the device"}
    return checks


def measure(
    staging: Path,
    sample_frame: np.ndarray,
    source: SourceModel,
    pruned: SourceModel | None,
    job: ConversionJob,
    options: ConversionOptions,
) -> tuple[LatencyMetrics, AccuracyMetrics | None]:
    """Host latency and, with evaluation photos, accuracy against the float model, of the bundle loaded as on the device.

    Raises:
        AccuracyError: The accuracy is outside the profile's tolerance (and the options do not allow it).
    """
    evaluation_set = job.evaluation
    with load_written(staging) as classifier:
        latency = measure_latency(classifier, sample_frame)
        if evaluation_set is None:
            return latency, None
        accuracy = evaluate(source, classifier, evaluation_set, job.input_spec, options.progress, pruned=pruned)
    accuracy = dataclasses.replace(accuracy, source=str(evaluation_set.path))
    return latency, checked_accuracy(job.profile, accuracy, options.allow_accuracy_drop)


def checked_accuracy(profile: Profile, accuracy: AccuracyMetrics, allowed: bool) -> AccuracyMetrics:
    """The accuracy with the profile's tolerance recorded.

    Raises:
        DataError: No evaluation image was readable.
        AccuracyError: The drop exceeds the tolerance and ``allowed`` is false.
    """
    drop, tolerance = accuracy.top1_drop, profile.max_top1_drop
    accuracy = dataclasses.replace(accuracy, tolerance=tolerance, within_tolerance=drop <= tolerance)
    if accuracy.images == 0:
        raise DataError(f"no readable evaluation image in {accuracy.source}")
    if drop <= tolerance:
        logger.info(
            "accuracy: float %.2f%%, converted %.2f%%, drop %.2f points (tolerance %.2f), agreement %.2f%%",
            accuracy.float_top1,
            accuracy.converted_top1,
            drop,
            tolerance,
            accuracy.top1_agreement,
        )
        return accuracy
    message = (
        f"converted model lost {drop:.2f} points of top-1 ({accuracy.float_top1:.2f}% -> "
        f"{accuracy.converted_top1:.2f}%) on {accuracy.images} images; profile '{profile.name}' allows "
        f"{tolerance:.2f}"
    )
    if not allowed:
        raise AccuracyError(f"{message}: no bundle written ({_remedy(profile, accuracy)}, or --allow-accuracy-drop)")
    logger.warning("%s: writing the bundle anyway (--allow-accuracy-drop)", message)
    return accuracy


def _remedy(profile: Profile, accuracy: AccuracyMetrics) -> str:
    """What to try when the drop is over the tolerance: for the step that lost the points."""
    if accuracy.pruned_top1 is not None and accuracy.float_top1 - accuracy.pruned_top1 > profile.max_top1_drop:
        return (
            f"pruning alone took {accuracy.float_top1 - accuracy.pruned_top1:.2f} of them, the pruned float model "
            f"scores {accuracy.pruned_top1:.2f}%: fine-tune longer (--finetune-epochs), add --distill, or prune less"
        )
    if profile.backend is not BackendKind.OPENVINO:
        return "use more or better calibration images, or --qat"
    if profile.openvino.precision is Precision.INT8:
        return "use more or better calibration images, or accuracy_control = true in the profile's [openvino]"
    return "a float IR should match the float model: check --input-range, --mean/--std and --color-order"


def with_sizes(
    pruning: PruningMetrics | None,
    target: Any,
    job: ConversionJob,
    result: TargetResult,
    original: SourceModel,
    timings: dict[str, float],
) -> PruningMetrics | None:
    """The pruning metrics with the written model's gzip size (and, unstructured, the unpruned model's)."""
    if pruning is None:
        return None
    pruning = dataclasses.replace(pruning, gzip_bytes=gzip_bytes(job.staging_dir / name for name in result.files))
    if job.profile.pruning.mode is PruningMode.UNSTRUCTURED:
        with conversion_step("convert the unpruned model for comparison", timings):
            pruning = dataclasses.replace(pruning, gzip_bytes_unpruned=_unpruned_gzip_bytes(target, job, original))
    return pruning


def _unpruned_gzip_bytes(target: Any, job: Any, original: Any) -> int:
    """The gzip size of the same target's model built from the unpruned model, for the manifest."""
    scratch = job.staging_dir / ".unpruned"
    scratch.mkdir()
    try:
        result = target(dataclasses.replace(job, source=original, staging_dir=scratch))
        return gzip_bytes(scratch / name for name in result.files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
