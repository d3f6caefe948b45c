"""Compression benchmarks: pruned, distilled and QAT bundles side by side with the plain one, in the same run.

Each setting converts the sample model for one TFLite profile, training on the train photos,
and is measured exactly like the plain bundle of that profile: the same held-out photos,
gzip size, and latency in a process that runs only the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import tillsight
from tillsight.report import summarize_bundle


def _seed() -> None:
    """The same initial state for every training row (runs still vary: TensorFlow's CPU kernels are not all deterministic)."""
    import keras

    keras.utils.set_random_seed(0)


def pruning_benchmark(
    model: Path,
    labels: Path,
    data: Path,
    out: Path,
    reference: dict,
    measure_process: Callable[[Path], dict],
    settings: dict[str, str],
    epochs: int,
    distilled: tuple[str, ...] = (),
    crop: float = 1.0,
) -> list[dict]:
    """Convert with each pruning setting and compare with the unpruned bundle of the same profile.

    Args:
        model: The float Keras model.
        labels: Its labels file.
        data: The grocery-store folder (``train.txt`` fine-tunes and calibrates, ``val.txt`` evaluates).
        out: Where the pruned bundles go (one folder per setting).
        reference: The unpruned bundle's row of the benchmark (summary and ``process`` figures).
        measure_process: Cold start, RSS and latency of a process running one bundle.
        settings: Name -> ``--prune`` setting, e.g. ``{"structured": "channels:0.5"}``.
        epochs: Fine-tuning epochs for every setting.
        distilled: Names of the settings whose fine-tuning distills from the unpruned model.
        crop: The model's centre crop fraction.

    Returns:
        One row per setting with its ratios against the reference.
    """
    rows = []
    for name, spec in settings.items():
        _seed()
        started = time.monotonic()
        bundle = tillsight.convert(
            model, reference["name"], calibration=data / "train.txt", evaluation=data / "val.txt", labels=labels,
            out=out / name, finetune=data / "train.txt",
            options=tillsight.ConversionOptions.for_profile(
                reference["name"], prune=spec, finetune_epochs=epochs, distill=name in distilled,
                allow_accuracy_drop=True, crop=crop,
            ),
        )
        seconds = time.monotonic() - started
        row = _pruning_row(name, spec, name in distilled, epochs, bundle, reference, measure_process(bundle.path), seconds)
        rows.append(row)
        print(f"pruning {name} ({spec}): top-1 {row['converted_top1']}%, p50 {row['process']['p50_ms']} ms, "
              f"gzip {row['gzip_bytes'] / 1e6:.2f} MB, {seconds:.0f} s", flush=True)
    return rows


def _pruning_row(
    name: str, spec: str, distilled: bool, epochs: int, bundle, reference: dict, process: dict, seconds: float
) -> dict:
    """One pruned bundle's figures and its ratios against the unpruned reference bundle."""
    summary = summarize_bundle(bundle.path)
    report, accuracy = bundle.manifest.metrics.pruning, bundle.manifest.metrics.accuracy
    return {
        "name": name, "setting": spec + (" + distill" if distilled else ""), "epochs": epochs,
        "distilled": distilled, "profile": reference["name"], "path": str(bundle.path),
        "model_bytes": summary.model_bytes, "gzip_bytes": summary.gzip_bytes,
        "float_top1": accuracy.float_top1, "pruned_top1": accuracy.pruned_top1,
        "converted_top1": accuracy.converted_top1, "top1_agreement": accuracy.top1_agreement,
        "drop_vs_unpruned_float": accuracy.top1_drop, "process": process, "conversion_s": round(seconds, 1),
        "finetune_s": report.finetune.seconds if report.finetune else None,
        "sparsity": report.sparsity, "removed_channels": report.removed_fraction,
        "macs_ratio": round(report.macs_after / report.macs_before, 3) if report.macs_after else None,
        "latency_ratio": round(process["p50_ms"] / reference["process"]["p50_ms"], 3),
        "gzip_ratio": round(summary.gzip_bytes / reference["gzip_bytes"], 3),
    }


def qat_benchmark(
    model: Path, labels: Path, data: Path, out: Path, reference: dict, measure_process: Callable[[Path], dict], epochs: int,
    crop: float = 1.0,
) -> dict:
    """Convert with quantization-aware fine-tuning and compare agreement with the post-training bundle."""
    _seed()
    started = time.monotonic()
    bundle = tillsight.convert(
        model, reference["name"], calibration=data / "train.txt", evaluation=data / "val.txt", labels=labels, out=out,
        finetune=data / "train.txt",
        options=tillsight.ConversionOptions.for_profile(
            reference["name"], qat=True, qat_epochs=epochs, allow_accuracy_drop=True, crop=crop
        ),
    )
    seconds = time.monotonic() - started
    process = measure_process(bundle.path)
    accuracy, qat = bundle.manifest.metrics.accuracy, bundle.manifest.metrics.qat
    print(f"QAT ({epochs} epochs): top-1 {accuracy.converted_top1}%, agreement {accuracy.top1_agreement}%, "
          f"{seconds:.0f} s", flush=True)
    return {
        "profile": reference["name"], "epochs": epochs, "path": str(bundle.path), "float_top1": accuracy.float_top1,
        "converted_top1": accuracy.converted_top1, "top1_drop": accuracy.top1_drop,
        "top1_agreement": accuracy.top1_agreement, "reference_agreement": reference["top1_agreement"],
        "qat_s": qat.training.seconds, "conversion_s": round(seconds, 1), "process": process,
        "latency_ratio": round(process["p50_ms"] / reference["process"]["p50_ms"], 3),
    }


def student_benchmark(
    model: Path,
    labels: Path,
    data: Path,
    out: Path,
    reference: dict,
    measure_process: Callable[[Path], dict],
    student: str,
    epochs: int,
    student_size: tuple[int, int] | None = None,
    crop: float = 1.0,
) -> dict:
    """Distill a smaller student from the model, convert it for the reference profile, compare with the teacher's bundle."""
    _seed()
    started = time.monotonic()
    options = tillsight.ConversionOptions(crop=crop)
    result = tillsight.distill(
        model, student, out / f"{student}.keras", data=data / "train.txt", epochs=epochs, evaluation=data / "val.txt",
        labels=labels, options=options, student_size=student_size,
    )
    distill_seconds = time.monotonic() - started
    bundle = tillsight.convert(
        result.path, reference["name"], calibration=data / "train.txt", evaluation=data / "val.txt", labels=labels,
        out=out / "bundles", options=tillsight.ConversionOptions(allow_accuracy_drop=True, crop=crop),
    )
    summary = summarize_bundle(bundle.path)
    process = measure_process(bundle.path)
    accuracy = result.report.accuracy
    print(f"student {student} ({epochs} epochs): float top-1 {accuracy.student_top1}% (teacher {accuracy.teacher_top1}%), "
          f"int8 p50 {process['p50_ms']} ms, distilled in {distill_seconds:.0f} s", flush=True)
    return {
        "student": student, "started_from_teacher": result.report.started_from_teacher, "student_input": list(result.report.student_input), "epochs": epochs, "profile": reference["name"], "path": str(bundle.path),
        "teacher_float_top1": accuracy.teacher_top1, "student_float_top1": accuracy.student_top1,
        "student_int8_top1": summary.converted_top1, "teacher_agreement": accuracy.top1_agreement,
        "teacher_parameters": result.report.teacher_parameters, "student_parameters": result.report.student_parameters,
        "model_bytes": summary.model_bytes, "distill_s": round(distill_seconds, 1), "process": process,
        "latency_ratio": round(process["p50_ms"] / reference["process"]["p50_ms"], 3),
    }
