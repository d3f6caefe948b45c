"""Compression benchmarks: pruned, distilled and QAT bundles side by side with the plain one, in the same run.

Each setting converts the sample model for one TFLite profile, training on the train photos,
and is measured exactly like the plain bundle of that profile: the same held-out photos,
gzip size, and latency in a process that runs only the bundle.

Training results are noisy: every setting that trains runs once per seed (``--seeds``, the
conversion's ``seed``), and a row holds the median of each accuracy figure, every seed's
figures beside it (``runs``) for the spread. A setting that trains nothing (one-shot
unstructured pruning) computes the same model from the same calibration images; what moves
its result is which images those are, so its "seeds" draw them: seed 0 calibrates on the train
list as it is, each other seed on the same photos in an order shuffled by it (the conversion
takes the first ``calibration_images`` spread over the classes). The bundle's structure is the
same for every seed, so latency and size are measured on the first.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import tillsight
from tillsight.datasets import read_image_set
from tillsight.profiles import PruningOptions
from tillsight.report import summarize_bundle

SEEDS = (0, 1, 2)

#: The figures of a row that change with the seed: the median is reported, each run kept.
_VARYING = (
    "pruned_top1",
    "converted_top1",
    "top1_agreement",
    "drop_vs_unpruned_float",
    "top1_drop",
    "finetune_s",
    "qat_s",
    "student_float_top1",
    "student_int8_top1",
    "teacher_agreement",
    "distill_s",
    "conversion_s",
)


def over_seeds(run: Callable[[int, bool], dict], seeds: Sequence[int]) -> dict:
    """``run(seed, measure)`` for each seed (``measure`` only for the first); the first row with medians and ``runs``."""
    rows = [run(seed, index == 0) for index, seed in enumerate(seeds)]
    merged = dict(rows[0])
    for key in _VARYING:
        values = [row[key] for row in rows if row.get(key) is not None]
        if values:
            merged[key] = round(statistics.median(values), 3)
    merged["runs"] = [
        {"seed": seed, **{key: row.get(key) for key in _VARYING if row.get(key) is not None}}
        for seed, row in zip(seeds, rows, strict=True)
    ]
    return merged


def pruning_benchmark(
    model: Path,
    labels: Path,
    data: Path,
    out: Path,
    reference: dict,
    measure_process: Callable[[Path], dict],
    settings: dict[str, str],
    epochs: int | None = None,
    distilled: tuple[str, ...] = (),
    crop: float = 1.0,
    seeds: Sequence[int] = SEEDS,
) -> list[dict]:
    """Convert with each pruning setting and compare with the unpruned bundle of the same profile.

    Args:
        model: The float Keras model.
        labels: Its labels file.
        data: The grocery-store folder (``train.txt`` fine-tunes and calibrates, ``val.txt`` evaluates).
        out: Where the pruned bundles go (one folder per setting and seed).
        reference: The unpruned bundle's row of the benchmark (summary and ``process`` figures).
        measure_process: Cold start, RSS and latency of a process running one bundle.
        settings: Name -> ``--prune`` setting, e.g. ``{"structured": "channels:0.5"}``.
        epochs: Fine-tuning epochs for every setting; None: each mode's default.
        distilled: Names of the settings whose fine-tuning distills from the unpruned model.
        crop: The model's centre crop fraction.
        seeds: The training seeds each setting that trains runs with.

    Returns:
        One row per setting with its ratios against the reference.
    """
    rows = []
    for name, spec in settings.items():
        trained = epochs if epochs is not None else PruningOptions.from_spec(spec).epochs

        def run(seed: int, measure: bool, name: str = name, spec: str = spec, trained: int = trained) -> dict:
            folder = out / f"{name}-seed{seed}"
            calibration = data / "train.txt" if trained or not seed else _shuffled_list(data / "train.txt", seed, folder)
            bundle, seconds = _convert_trained(
                model, reference["name"], data, labels, folder, calibration=calibration,
                prune=spec, finetune_epochs=trained, distill=name in distilled, crop=crop, seed=seed,
            )  # fmt: skip
            process = measure_process(bundle.path) if measure else None
            row = _pruning_row(name, spec, name in distilled, trained, bundle, reference, process, seconds)
            print(f"pruning {name} ({spec}) seed {seed}: top-1 {row['converted_top1']}%, {seconds:.0f} s", flush=True)
            return row

        rows.append(over_seeds(run, seeds))
    return rows


def _shuffled_list(listing: Path, seed: int, folder: Path) -> Path:
    """The list file's photos (read as the conversion reads them) in an order shuffled by ``seed``, written under
    ``folder`` with absolute paths."""
    items = list(read_image_set(listing).images)
    random.Random(seed).shuffle(items)
    folder.mkdir(parents=True, exist_ok=True)
    shuffled = folder / f"calibration-seed{seed}.txt"
    shuffled.write_text("".join(f"{item.path.resolve()}, {item.label_index}\n" for item in items))
    return shuffled


def _convert_trained(
    model: Path, profile: str, data: Path, labels: Path, out: Path, calibration: Path | None = None, **options
) -> tuple:
    """``tillsight.convert`` for ``profile`` calibrated (default: on the train photos) and fine-tuned on the train photos,
    evaluated on val, with the conversion's ``options`` (accuracy drops allowed: the rows report them); the bundle and
    the seconds it took."""
    started = time.monotonic()
    bundle = tillsight.convert(
        model, profile, calibration=calibration or data / "train.txt", evaluation=data / "val.txt", labels=labels, out=out,
        finetune=data / "train.txt",
        options=tillsight.ConversionOptions.for_profile(profile, allow_accuracy_drop=True, **options),
    )  # fmt: skip
    return bundle, time.monotonic() - started


def _pruning_row(
    name: str, spec: str, distilled: bool, epochs: int, bundle, reference: dict, process: dict | None, seconds: float
) -> dict:
    """One pruned bundle's figures and its ratios against the unpruned reference bundle."""
    summary = summarize_bundle(bundle.path)
    report, accuracy = bundle.manifest.metrics.pruning, bundle.manifest.metrics.accuracy
    return {
        "name": name,
        "setting": spec + (" + distill" if distilled else ""),
        "epochs": epochs,
        "distilled": distilled,
        "profile": reference["name"],
        "path": str(bundle.path),
        "model_bytes": summary.model_bytes,
        "gzip_bytes": summary.gzip_bytes,
        "float_top1": accuracy.float_top1,
        "pruned_top1": accuracy.pruned_top1,
        "converted_top1": accuracy.converted_top1,
        "top1_agreement": accuracy.top1_agreement,
        "drop_vs_unpruned_float": accuracy.top1_drop,
        "process": process,
        "conversion_s": round(seconds, 1),
        "finetune_s": report.finetune.seconds if report.finetune else None,
        "one_shot_s": (report.details.get("one_shot") or report.details.get("reconstruction") or {}).get("seconds"),
        "sparsity": report.sparsity,
        "removed_channels": report.removed_fraction,
        "macs_ratio": round(report.macs_after / report.macs_before, 3) if report.macs_after else None,
        "latency_ratio": round(process["p50_ms"] / reference["process"]["p50_ms"], 3) if process else None,
        "gzip_ratio": round(summary.gzip_bytes / reference["gzip_bytes"], 3),
    }


def qat_benchmark(
    model: Path,
    labels: Path,
    data: Path,
    out: Path,
    reference: dict,
    measure_process: Callable[[Path], dict],
    epochs: int,
    crop: float = 1.0,
    seeds: Sequence[int] = SEEDS,
) -> dict:
    """Convert with quantization-aware fine-tuning and compare agreement with the post-training bundle."""

    def run(seed: int, measure: bool) -> dict:
        bundle, seconds = _convert_trained(
            model, reference["name"], data, labels, out / f"seed{seed}", qat=True, qat_epochs=epochs, crop=crop, seed=seed
        )
        process = measure_process(bundle.path) if measure else None
        accuracy, qat = bundle.manifest.metrics.accuracy, bundle.manifest.metrics.qat
        print(
            f"QAT ({epochs} epochs) seed {seed}: top-1 {accuracy.converted_top1}%, agreement {accuracy.top1_agreement}%, "
            f"{seconds:.0f} s",
            flush=True,
        )
        return {
            "profile": reference["name"],
            "epochs": epochs,
            "path": str(bundle.path),
            "float_top1": accuracy.float_top1,
            "converted_top1": accuracy.converted_top1,
            "top1_drop": accuracy.top1_drop,
            "top1_agreement": accuracy.top1_agreement,
            "reference_agreement": reference["top1_agreement"],
            "qat_s": qat.training.seconds,
            "conversion_s": round(seconds, 1),
            "process": process,
            "latency_ratio": round(process["p50_ms"] / reference["process"]["p50_ms"], 3) if process else None,
        }

    return over_seeds(run, seeds)


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
    seeds: Sequence[int] = SEEDS,
) -> dict:
    """Distill a smaller student from the model, convert it for the reference profile, compare with the teacher's bundle."""

    def run(seed: int, measure: bool) -> dict:
        started = time.monotonic()
        options = tillsight.ConversionOptions(crop=crop, seed=seed)
        result = tillsight.distill(
            model,
            student,
            out / f"seed{seed}" / f"{student}.keras",
            data=data / "train.txt",
            epochs=epochs,
            evaluation=data / "val.txt",
            labels=labels,
            options=options,
            student_size=student_size,
        )
        distill_seconds = time.monotonic() - started
        bundle = tillsight.convert(
            result.path,
            reference["name"],
            calibration=data / "train.txt",
            evaluation=data / "val.txt",
            labels=labels,
            out=out / f"seed{seed}" / "bundles",
            options=tillsight.ConversionOptions(allow_accuracy_drop=True, crop=crop),
        )
        summary = summarize_bundle(bundle.path)
        process = measure_process(bundle.path) if measure else None
        accuracy, training = result.report.accuracy, result.report.training.details
        print(
            f"student {student} ({epochs} epochs) seed {seed}: float top-1 {accuracy.student_top1}% "
            f"(teacher {accuracy.teacher_top1}%), int8 {summary.converted_top1}%, {distill_seconds:.0f} s",
            flush=True,
        )
        return {
            "student": student,
            "started_from_teacher": result.report.started_from_teacher,
            "student_input": list(result.report.student_input),
            "epochs": epochs,
            "profile": reference["name"],
            "path": str(bundle.path),
            "teacher_float_top1": accuracy.teacher_top1,
            "student_float_top1": accuracy.student_top1,
            "student_int8_top1": summary.converted_top1,
            "teacher_agreement": accuracy.top1_agreement,
            "kept_start": training.get("kept_start"),
            "teacher_parameters": result.report.teacher_parameters,
            "student_parameters": result.report.student_parameters,
            "model_bytes": summary.model_bytes,
            "distill_s": round(distill_seconds, 1),
            "process": process,
            "latency_ratio": round(process["p50_ms"] / reference["process"]["p50_ms"], 3) if process else None,
        }

    return over_seeds(run, seeds)
