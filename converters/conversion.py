"""``tillsight.convert``: a Keras classifier in, a verified bundle for one device profile out.

The steps, each timed and logged: check the inputs (profile, labels, data, model) before
anything is written; calibrate on images spread over the classes, preprocessed exactly as
the runtime will; run the profile's conversion target; load the result as the device
would; measure accuracy against the float model; write the bundle atomically. A drop
beyond the profile's tolerance fails the conversion and writes nothing, unless allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tillsight.bundle import (
    Bundle,
    OutputActivation,
    read_bundle,
    write_manifest,
)
from tillsight.conformance import DEFAULT_CONFORMANCE_IMAGES, add_conformance_set_from_photos
from tillsight.conversion_options import ConversionOptions
from tillsight.datasets import ImageSet, check_labels, iter_images, read_image_set, read_labels
from tillsight.errors import CalibrationError, ConversionError, DataError, TillsightError, summarize
from tillsight.preprocess import InputSpec, preprocess
from tillsight.profiles import Profile, PruningMode, SizePolicy, WeightRounding, load_profile
from tillsight.signing import load_private_key, sign_bundle
from tillsight.staging import staged_directory

from . import ConversionJob, target_for
from . import bundle_record as record
from .compression import Compressed, compress, training_set
from .input_checks import check_conversion_inputs
from .source import PROBE_IMAGES, SourceModel, load_source_model, output_activation
from .steps import conversion_step, shown

__all__ = ["ConversionOptions", "convert"]

logger = logging.getLogger(__name__)


def _input_size(profile: Profile, model_size: tuple[int | None, int | None], description: str) -> tuple[int, int]:
    profile_size = profile.input.size
    if None in model_size:
        return profile_size
    model_hw = (int(model_size[0]), int(model_size[1]))  # type: ignore[arg-type]
    if profile.input.size_policy is SizePolicy.PROFILE and model_hw != profile_size:
        raise ConversionError(
            f"profile '{profile.name}' requires input size {list(profile_size)} but {description} takes "
            f'{list(model_hw)}; export the model with that size or use size_policy = "model"'
        )
    return model_hw


def _load_calibration(
    image_set: ImageSet, profile: Profile, spec: InputSpec, progress: bool
) -> tuple[np.ndarray, int, np.ndarray]:
    """Preprocessed calibration images, the count of unreadable files, and the first frame."""
    quant = profile.quantization
    wanted = quant.calibration_images
    candidates = image_set.spread_over_classes(len(image_set.images))
    skipped: list[Path] = []
    arrays: list[np.ndarray] = []
    first_frame = None

    with tqdm(total=min(wanted, len(candidates)), desc="calibration", disable=not progress) as bar:
        for _item, image in iter_images(candidates, skipped):
            first_frame = image if first_frame is None else first_frame
            arrays.append(preprocess(image, spec))
            bar.update(1)
            if len(arrays) == wanted:
                break
        if bar.n != bar.total:  # fewer usable images than listed (unreadable ones skipped): the bar still ends at 100%
            bar.total = bar.n  # drawn once, when the bar closes
    if len(arrays) < quant.min_calibration_images:
        raise CalibrationError(
            f"calibration data {image_set.path} has {len(arrays)} usable images ({len(skipped)} unreadable "
            f"skipped); profile '{profile.name}' needs at least {quant.min_calibration_images}: add images, or accept "
            "fewer with --min-calibration N (ConversionOptions.min_calibration_images; profile key "
            "quantization.min_calibration_images)"
        )
    if skipped:
        logger.warning("calibration: skipped %d unreadable or non-image files", len(skipped))
    return np.stack(arrays), len(skipped), first_frame


def _probe_images(image_set: ImageSet | None, spec: InputSpec) -> tuple[np.ndarray, int, np.ndarray]:
    """Images that tell what the model outputs and time it when nothing is calibrated: the first evaluation
    photos, else seeded noise (any input tells softmax, sigmoid and logits apart)."""
    arrays, frames, skipped = [], [], []
    if image_set is not None:
        for _item, image in iter_images(image_set.images[:PROBE_IMAGES], skipped):
            frames.append(image)
            arrays.append(preprocess(image, spec))
    if not arrays:
        noise = np.random.default_rng(0).integers(0, 256, (PROBE_IMAGES, spec.height, spec.width, 3), dtype=np.uint8)
        frames = list(noise)
        arrays = [preprocess(image, spec) for image in frames]
    return np.stack(arrays), len(skipped), frames[0]


def convert(
    model: Any,
    profile: str | Path | Profile,
    calibration: str | Path | None,
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
        calibration: Class folder or list file of representative images; None for a profile that quantizes
            nothing (an OpenVINO FP16 or FP32 IR).
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
    with shown(options.progress):
        return _convert(model, profile, calibration, out, evaluation, labels, options, finetune)


def _convert(
    model: Any,
    profile: str | Path | Profile,
    calibration: str | Path | None,
    out: str | Path,
    evaluation: str | Path | None,
    labels: str | Path | Sequence[str] | None,
    options: ConversionOptions,
    finetune: str | Path | None,
) -> Bundle:
    """The conversion's outline (see :func:`convert`): one call per step in the order they run, each timed under its name.

    Longer than 60 lines on purpose: it is the outline; the staging ``with`` must enclose every write to the bundle.
    """
    timings: dict[str, float] = {}
    with conversion_step("check inputs", timings):
        resolved = options.apply_to(load_profile(profile))
        check_conversion_inputs(model, resolved, calibration, evaluation, labels, finetune, out)
        target = target_for(resolved.backend)
        label_names = (
            check_labels(labels, "the labels") if isinstance(labels, (list, tuple)) else (read_labels(labels) if labels else None)
        )
        signing_key = load_private_key(options.sign_key) if options.sign_key is not None else None
    with conversion_step("load model", timings):
        source = _load_model(model, label_names, options)
    with conversion_step("list data", timings):
        evaluation_set = _evaluation_set(evaluation, label_names)
        calibration_set = read_image_set(calibration, label_names) if calibration is not None else evaluation_set
        label_names = label_names or _default_labels(calibration_set, source.num_classes)
        finetune_set = training_set(resolved, source, finetune, label_names)
    float_spec = _float_spec(resolved, source, options)
    with conversion_step("calibration images", timings):
        if calibration is None:  # a float IR quantizes nothing: a few photos (or pixels) tell the outputs and time it
            calibration_arrays, calibration_skipped, sample_frame = _probe_images(calibration_set, float_spec)
        else:
            calibration_arrays, calibration_skipped, sample_frame = _load_calibration(
                calibration_set, resolved, float_spec, options.progress
            )
        activation = output_activation(source, calibration_arrays)
    compressed = compress(
        resolved, source, finetune_set, float_spec, activation, calibration_arrays, options.progress, timings, options.seed
    )

    final_dir = Path(out) / resolved.name
    with _writing(final_dir), staged_directory(final_dir) as staging:
        adds_softmax = activation == OutputActivation.SOFTMAX_ADDED
        job = ConversionJob(
            compressed.source,
            _rounding_profile(resolved, compressed),
            float_spec,
            calibration_arrays,
            adds_softmax,
            staging,
            evaluation_set,
            tuple(label_names),
        )
        with conversion_step(f"convert for {resolved.name} ({resolved.backend.value})", timings) as step:
            result = target(job)
            step.artifact = staging / result.model_file
        calibration_record = {
            "calibration_images": len(calibration_arrays) if calibration else 0,
            "calibration_skipped": calibration_skipped,
            "calibration_source": str(calibration) if calibration else None,
        }
        manifest = record.manifest_of(resolved, compressed.source, label_names, result, activation, staging, calibration_record)
        write_manifest(staging, manifest)  # the runtime reads it: the bundle is loaded as on the device next
        pruning = record.with_sizes(compressed.pruning, target, job, result, source, timings)
        latency, accuracy = record.measure(staging, sample_frame, source, compressed.pruned, job, options)
        metrics = dataclasses.replace(
            manifest.metrics,
            latency_host=latency,
            accuracy=accuracy,
            pruning=pruning,
            qat=compressed.qat,
            budgets=record.check_budgets(resolved, manifest.metrics.model_bytes),
            conversion_seconds=timings,
        )
        write_manifest(staging, dataclasses.replace(manifest, metrics=metrics))
        with conversion_step("conformance set", timings):
            _add_conformance_set(staging, evaluation_set or calibration_set)
        if signing_key is not None:  # the final manifest, before the bundle is published
            sign_bundle(staging, signing_key)
    return read_bundle(final_dir)


def _rounding_profile(profile: Profile, compressed: Compressed) -> Profile:
    """The profile the target converts with: nearest weight rounding for a model pruned unstructured in this conversion.

    Compensated rounding lowered such a model's int8 accuracy. On the sample EfficientNet-Lite0 pruned
    ``unstructured:0.5`` in one shot, three calibration draws: int8 top-1 82.43%, 78.72% and 78.04% with
    it, 82.77%, 80.07% and 80.07% with nearest rounding (``bench/ANALYSIS.md``).
    """
    quantization = profile.quantization
    if (
        compressed.pruning is None
        or profile.pruning.mode is not PruningMode.UNSTRUCTURED
        or quantization.weight_rounding is not WeightRounding.COMPENSATED
    ):
        return profile
    logger.info("weight rounding: nearest for the unstructured-pruned model (compensated rounding lowered its int8 accuracy)")
    return dataclasses.replace(profile, quantization=dataclasses.replace(quantization, weight_rounding=WeightRounding.NEAREST))


#: TensorFlow's names for a file it could not write (a full disk raises OutOfRangeError from the SavedModel export).
_TENSORFLOW_WRITE_ERRORS = ("OutOfRangeError", "ResourceExhaustedError", "PermissionDeniedError")


@contextlib.contextmanager
def _writing(final_dir: Path) -> Iterator[None]:
    """Turn a failed write while the bundle is staged into one line naming the folder; the staging is removed."""
    try:
        yield
    except TillsightError:
        raise
    except Exception as exc:
        tensorflow = type(exc).__module__.startswith("tensorflow") and type(exc).__name__ in _TENSORFLOW_WRITE_ERRORS
        if not (isinstance(exc, OSError) or tensorflow):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else summarize(getattr(exc, "message", exc))
        raise ConversionError(
            f"writing the bundle for {final_dir} failed ({reason}); nothing was published and the previous bundle there, "
            "if any, is untouched: free disk space or pick another --out"
        ) from exc


def _load_model(model: Any, labels: tuple[str, ...] | None, options: ConversionOptions) -> SourceModel:
    """The source model, checked against the labels.

    Raises:
        ModelLoadError: The model cannot be loaded.
        DataError: The labels do not match its outputs.
    """
    source = load_source_model(model, allow_unsafe=options.allow_unsafe_model)
    if labels is not None and len(labels) != source.num_classes:
        raise DataError(
            f"{len(labels)} labels for a model with {source.num_classes} outputs "
            f"({source.description}); the labels file needs one line per output"
        )
    return source


def _evaluation_set(evaluation: str | Path | None, labels: tuple[str, ...] | None) -> ImageSet | None:
    """The labeled evaluation photos, when given."""
    if evaluation is None:
        return None
    evaluation_set = read_image_set(evaluation, labels)
    if not evaluation_set.labeled:
        raise DataError(f"evaluation data {evaluation} has no labels: use a class folder or a list file")
    return evaluation_set


def _float_spec(profile: Profile, source: SourceModel, options: ConversionOptions) -> InputSpec:
    """The float model's input spec: the model's (or profile's) size, the options' colour, range and crop."""
    height, width = _input_size(profile, source.input_size, source.description)
    return InputSpec(
        height=height,
        width=width,
        color_order=options.color_order,
        resize=profile.input.resize,
        crop=profile.input.crop if options.crop is None else options.crop,
        mean=options.mean,
        std=options.std,
    )


def _add_conformance_set(staging: Path, image_set: ImageSet | None) -> None:
    """The inputs and top-1 results a kiosk must reproduce before it takes this bundle (see :mod:`tillsight.conformance`)."""
    if image_set is None:
        logger.warning("no photos to build the bundle's conformance set from: kiosks of a fleet will refuse it")
        return
    kept = add_conformance_set_from_photos(staging, image_set)
    if kept < DEFAULT_CONFORMANCE_IMAGES:
        logger.warning("the conformance set holds %d inputs, not %d: few clear photos", kept, DEFAULT_CONFORMANCE_IMAGES)


def _default_labels(calibration_set: ImageSet | None, num_classes: int) -> tuple[str, ...]:
    """Labels when no labels file is given: class folder names, else generic names."""
    if calibration_set is not None and calibration_set.path.is_dir() and calibration_set.labeled:
        names = sorted(p.name for p in calibration_set.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(names) == num_classes:
            return tuple(names)
    logger.warning("no labels file: naming the %d classes class_0 ... class_%d; pass --labels", num_classes, num_classes - 1)
    return tuple(f"class_{i}" for i in range(num_classes))
