"""``tillsight.convert``: a Keras classifier in, a verified bundle for one device profile out.

The steps, each timed and logged: check the inputs (profile, labels, data, model) before
anything is written; calibrate on images spread over the classes, preprocessed exactly as
the runtime will; run the profile's conversion target; load the result as the device
would; measure accuracy against the float model; write the bundle atomically. A drop
beyond the profile's tolerance fails the conversion and writes nothing, unless allowed.
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

from ._version import __version__
from .bundle import (
    Bundle,
    Manifest,
    OutputSpec,
    RuntimeSettings,
    gzip_bytes,
    read_bundle,
    sha256_of_file,
    staged_directory,
    write_manifest,
)
from .classifier import load
from .datasets import ImageSet, iter_images, read_image_set, read_labels
from .errors import AccuracyError, CalibrationError, ConversionError, DataError
from .preprocess import ColorOrder, InputRange, InputSpec, preprocess
from .profiles import DistillationOptions, Profile, PruningMode, PruningOptions, QatOptions, SizePolicy, crop_problem, load_profile
from .compression import compress, training_set
from .steps import conversion_step

__all__ = ["ConversionOptions", "convert"]

logger = logging.getLogger(__name__)

_PROBE_IMAGES = 16  # calibration images used to tell probabilities from logits


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
    """How the source model expects its input, and what the conversion may do."""

    color_order: ColorOrder = ColorOrder.RGB
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in 0-255 pixel units
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop: float | None = None  # central fraction of each side kept before resizing; None: the profile's
    allow_accuracy_drop: bool = False  # write the bundle even if the drop exceeds the tolerance
    allow_unsafe_model: bool = False  # load model files with Keras safe mode off
    progress: bool = False  # progress bars on stderr
    pruning: PruningOptions | None = None  # replaces the profile's [pruning] table (e.g. from --prune)
    distillation: DistillationOptions | None = None  # replaces the profile's [distillation] table (e.g. --distill)
    qat: QatOptions | None = None  # replaces the profile's [qat] table (e.g. --qat)

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values each (one per channel)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if self.crop is not None and (problem := crop_problem(self.crop)):
            raise ValueError(f"crop {problem}")

    @classmethod
    def from_input_range(cls, input_range: InputRange | str = InputRange.PIXELS, **kwargs: Any) -> ConversionOptions:
        """Options for a model expecting one of the common value ranges.

        Args:
            input_range: ``0-255`` (preprocessing inside the model), ``0-1`` or ``-1-1``.
            **kwargs: Any other field of :class:`ConversionOptions`.

        Raises:
            ValueError: Unknown range.
        """
        mean, std = InputRange(input_range).mean_std()
        return cls(mean=mean, std=std, **kwargs)


def _input_size(profile: Profile, model_size: tuple[int | None, int | None], description: str) -> tuple[int, int]:
    profile_size = profile.input.size
    if None in model_size:
        return profile_size
    model_hw = (int(model_size[0]), int(model_size[1]))  # type: ignore[arg-type]
    if profile.input.size_policy is SizePolicy.PROFILE and model_hw != profile_size:
        raise ConversionError(
            f"profile '{profile.name}' requires input size {list(profile_size)} but {description} takes "
            f"{list(model_hw)}; export the model with that size or use size_policy = \"model\""
        )
    return model_hw


def _load_calibration(
    image_set: ImageSet, profile: Profile, spec: InputSpec, progress: bool
) -> tuple[np.ndarray, int, np.ndarray]:
    """Preprocessed calibration images, the count of unreadable files, and the first frame."""
    quant = profile.quantization
    wanted = quant.calibration_samples
    candidates = image_set.spread_over_classes(len(image_set.images))
    skipped: list[Path] = []
    arrays: list[np.ndarray] = []
    first_frame = None
    from tqdm import tqdm  # only converting needs progress bars: keep `import tillsight` light on the device

    with tqdm(total=wanted, desc="calibration", disable=not progress) as bar:
        for _item, image in iter_images(candidates, skipped):
            first_frame = image if first_frame is None else first_frame
            arrays.append(preprocess(image, spec))
            bar.update(1)
            if len(arrays) == wanted:
                break
    if len(arrays) < quant.min_calibration_samples:
        raise CalibrationError(
            f"calibration data {image_set.source} has {len(arrays)} usable images ({len(skipped)} unreadable "
            f"skipped); profile '{profile.name}' needs at least {quant.min_calibration_samples}: add images"
        )
    if skipped:
        logger.warning("calibration: skipped %d unreadable or non-image files", len(skipped))
    return np.stack(arrays), len(skipped), first_frame


def output_activation(source: Any, calibration: np.ndarray) -> str:
    """What a model outputs, told from a few preprocessed images: ``softmax``, ``sigmoid`` or ``softmax-added`` (logits).

    Args:
        source: Anything with ``predict(images) -> scores`` (a SourceModel).
        calibration: Preprocessed images; the first 16 are used.
    """
    outputs = source.predict(calibration[:_PROBE_IMAGES])
    in_unit_range = bool(np.all(outputs >= -1e-6) and np.all(outputs <= 1.0 + 1e-6))
    if in_unit_range and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
        return "softmax"
    if in_unit_range:
        return "sigmoid"
    return "softmax-added"


def convert(
    model: Any,
    profile: str | Path | Profile,
    calibration: str | Path,
    out: str | Path,
    evaluation: str | Path | None = None,
    labels: str | Path | Sequence[str] | None = None,
    options: ConversionOptions = ConversionOptions(),
    finetune: str | Path | None = None,
) -> Bundle:
    """Convert a Keras classifier into a bundle for one device profile.

    Args:
        model: ``.keras`` / ``.h5`` file, SavedModel directory, or an in-memory ``keras.Model``.
        profile: Shipped profile name, path to a profile TOML file, or a :class:`Profile`.
        calibration: Class folder or list file of representative images.
        out: Output folder; the bundle is written to ``out/<profile name>/``.
        evaluation: Labeled class folder or list file for the accuracy check.
        labels: Labels file or sequence of labels, in output-index order.
        options: Input expectations of the model and conversion switches.
        finetune: Photos to fine-tune on after pruning and for QAT: a class folder or list
            file, or (with distillation) a folder of unlabeled frames.

    Returns:
        The written, verified bundle.

    Raises:
        ProfileError, ModelLoadError, DataError, CalibrationError, ConversionError,
        AccuracyError: Nothing is written when any of these is raised.
    """
    timings: dict[str, float] = {}
    with conversion_step("check inputs", timings):
        resolved = load_profile(profile)
        overrides = {"pruning": options.pruning, "distillation": options.distillation, "qat": options.qat}
        resolved = dataclasses.replace(resolved, **{key: value for key, value in overrides.items() if value is not None})
        from tillsight.converters import target_for  # the converter side: imports TensorFlow

        target = target_for(resolved.backend)
        label_names = tuple(labels) if isinstance(labels, (list, tuple)) else (read_labels(labels) if labels else None)

    with conversion_step("load model", timings):
        from tillsight.converters.source import load_source_model

        source = load_source_model(model, allow_unsafe=options.allow_unsafe_model)
        if label_names is not None and len(label_names) != source.num_classes:
            raise DataError(
                f"{len(label_names)} labels for a model with {source.num_classes} outputs "
                f"({source.description}); the labels file needs one line per output"
            )

    with conversion_step("list data", timings):
        calibration_set = read_image_set(calibration, label_names)
        evaluation_set = read_image_set(evaluation, label_names) if evaluation is not None else None
        if evaluation_set is not None and not evaluation_set.labeled:
            raise DataError(f"evaluation data {evaluation} has no labels: use a class folder or a list file")
        if label_names is None:
            label_names = _default_labels(calibration_set, source.num_classes)
        finetune_set = training_set(resolved, source, finetune, label_names)

    height, width = _input_size(resolved, source.input_size, source.description)
    float_spec = InputSpec(
        height=height,
        width=width,
        color_order=options.color_order,
        resize=resolved.input.resize,
        crop=resolved.input.crop if options.crop is None else options.crop,
        mean=options.mean,
        std=options.std,
    )
    with conversion_step("calibration images", timings):
        calibration_arrays, calibration_skipped, sample_frame = _load_calibration(
            calibration_set, resolved, float_spec, options.progress
        )
        activation = output_activation(source, calibration_arrays)
    original = source
    compressed = compress(resolved, source, finetune_set, float_spec, activation, calibration_arrays, options.progress, timings)
    source, pruning_report = compressed.source, compressed.metrics.get("pruning")

    final_dir = Path(out) / resolved.name
    with staged_directory(final_dir) as staging:
        from tillsight.converters import ConversionJob

        job = ConversionJob(
            source, resolved, float_spec, calibration_arrays, activation == "softmax-added", staging, evaluation_set
        )
        with conversion_step(f"convert for {resolved.name} ({resolved.backend.value})", timings) as step:
            result = target(job)
            step.artifact = staging / result.model_file
        manifest = _manifest(resolved, source, label_names, result, activation, staging)
        manifest.quantization.update(
            calibration_images=len(calibration_arrays),
            calibration_skipped=calibration_skipped,
            calibration_source=str(calibration),
        )
        write_manifest(staging, manifest)
        metrics = manifest.metrics
        metrics.update(compressed.metrics)
        if pruning_report is not None:
            pruning_report["gzip_bytes"] = gzip_bytes(staging / name for name in result.files)
            if resolved.pruning.mode is PruningMode.UNSTRUCTURED:
                with conversion_step("convert the unpruned model for comparison", timings):
                    pruning_report["gzip_bytes_unpruned"] = _unpruned_gzip_bytes(target, job, original)
        with conversion_step("load as on the device and measure", timings), load(staging) as classifier:
            from tillsight.converters.evaluate import evaluate, measure_latency

            metrics["latency_host"] = measure_latency(classifier, sample_frame)
            if evaluation_set is not None:
                report = evaluate(
                    original, classifier, evaluation_set, float_spec, options.progress,
                    pruned=compressed.pruned,
                )
                metrics["accuracy"] = {**report.to_dict(), "source": str(evaluation)}
        metrics["budgets"] = _check_budgets(resolved, metrics)
        metrics["conversion_seconds"] = timings
        if evaluation_set is not None:
            _check_accuracy(resolved, metrics["accuracy"], options.allow_accuracy_drop)
        write_manifest(staging, manifest)
    return read_bundle(final_dir)


def _unpruned_gzip_bytes(target: Any, job: Any, original: Any) -> int:
    """The gzip size of the same target's model built from the unpruned model, for the manifest."""
    scratch = job.staging_dir / ".unpruned"
    scratch.mkdir()
    try:
        result = target(dataclasses.replace(job, source=original, staging_dir=scratch))
        return gzip_bytes(scratch / name for name in result.files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _default_labels(calibration_set: ImageSet, num_classes: int) -> tuple[str, ...]:
    """Labels when no labels file is given: class folder names, else generic names."""
    if calibration_set.source.is_dir() and calibration_set.labeled:
        names = sorted(p.name for p in calibration_set.source.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(names) == num_classes:
            return tuple(names)
    logger.warning("no labels file: naming the %d classes class_0 ... class_%d; pass --labels", num_classes, num_classes - 1)
    return tuple(f"class_{i}" for i in range(num_classes))


def _manifest(
    profile: Profile,
    source: Any,
    labels: Sequence[str],
    result: Any,
    activation: str,
    staging: Path,
) -> Manifest:
    tensor_out = result.output_tensor
    artifacts = {
        name: {"sha256": sha256_of_file(staging / name), "bytes": (staging / name).stat().st_size}
        for name in result.files
    }
    size = sum(record["bytes"] for record in artifacts.values())
    return Manifest(
        profile_name=profile.name,
        labels=tuple(labels),
        input=result.input_spec,
        output=OutputSpec(len(labels), tensor_out.dtype, tensor_out.scale, tensor_out.zero_point, activation),
        runtime=RuntimeSettings(
            profile.backend, result.model_file, profile.threads, profile.fallbacks, profile.device, result.runtime_options
        ),
        artifacts=artifacts,
        profile=profile.to_dict(),
        source_model={"path": source.description, "format": source.format, "sha256": source.sha256},
        quantization=dict(result.quantization),
        metrics={"model_bytes": size},
        target_report=dict(result.report),
        sdk_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _check_budgets(profile: Profile, metrics: dict[str, Any]) -> dict[str, Any]:
    budgets = profile.budgets
    checks: dict[str, Any] = {}
    if budgets.max_model_bytes:
        within = metrics["model_bytes"] <= budgets.max_model_bytes
        checks["model_bytes"] = {"limit": budgets.max_model_bytes, "actual": metrics["model_bytes"], "within": within}
        if not within:
            logger.warning(
                "model is %d bytes, over profile '%s' budget of %d bytes",
                metrics["model_bytes"], profile.name, budgets.max_model_bytes,
            )
    if budgets.max_latency_ms:
        checks["latency_ms"] = {"limit": budgets.max_latency_ms, "note": "check on the device; host latency is not comparable"}
    if budgets.max_memory_bytes:
        checks["memory_bytes"] = {"limit": budgets.max_memory_bytes, "note": "check on the device"}
    return checks


def _check_accuracy(profile: Profile, accuracy: dict[str, Any], allowed: bool) -> None:
    drop, tolerance = accuracy["top1_drop"], profile.max_top1_drop
    accuracy["tolerance"] = tolerance
    accuracy["within_tolerance"] = drop <= tolerance
    if accuracy["images"] == 0:
        raise DataError(f"no readable evaluation image in {accuracy['source']}")
    if drop <= tolerance:
        logger.info(
            "accuracy: float %.2f%%, converted %.2f%%, drop %.2f points (tolerance %.2f), agreement %.2f%%",
            accuracy["float_top1"], accuracy["converted_top1"], drop, tolerance, accuracy["top1_agreement"],
        )
        return
    message = (
        f"converted model lost {drop:.2f} points of top-1 ({accuracy['float_top1']:.2f}% -> "
        f"{accuracy['converted_top1']:.2f}%) on {accuracy['images']} images; profile '{profile.name}' allows "
        f"{tolerance:.2f}"
    )
    if not allowed:
        raise AccuracyError(message + ": no bundle written (use more or better calibration images, or --allow-accuracy-drop)")
    logger.warning("%s: writing the bundle anyway (--allow-accuracy-drop)", message)
