"""Compression benchmarks: pruned bundles side by side with the unpruned one, in the same run.

Each setting converts the sample model for one TFLite profile with pruning and fine-tuning
on the train photos, and is measured exactly like the unpruned bundle of that profile: the
same held-out photos, gzip size, and latency in a process that runs only the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import tillsight
from tillsight.report import summarize_bundle


def pruning_benchmark(
    model: Path,
    labels: Path,
    data: Path,
    out: Path,
    reference: dict,
    measure_process: Callable[[Path], dict],
    settings: dict[str, str],
    epochs: int,
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

    Returns:
        One row per setting with its ratios against the reference.
    """
    rows = []
    for name, spec in settings.items():
        pruning = tillsight.PruningOptions.from_spec(spec, base=tillsight.PruningOptions(finetune_epochs=epochs))
        started = time.monotonic()
        bundle = tillsight.convert(
            model, reference["name"], calibration=data / "train.txt", evaluation=data / "val.txt", labels=labels,
            out=out / name, finetune=data / "train.txt",
            options=tillsight.ConversionOptions(allow_accuracy_drop=True, pruning=pruning),
        )
        seconds = time.monotonic() - started
        summary = summarize_bundle(bundle.path)
        process = measure_process(bundle.path)
        report = bundle.manifest.metrics["pruning"]
        accuracy = bundle.manifest.metrics["accuracy"]
        rows.append({
            "name": name, "setting": spec, "epochs": epochs, "profile": reference["name"], "path": str(bundle.path),
            "model_bytes": summary.model_bytes, "gzip_bytes": summary.gzip_bytes,
            "float_top1": accuracy["float_top1"], "pruned_top1": accuracy["pruned_top1"],
            "converted_top1": accuracy["converted_top1"], "top1_agreement": accuracy["top1_agreement"],
            "drop_vs_unpruned_float": accuracy["top1_drop"], "process": process, "conversion_s": round(seconds, 1),
            "finetune_s": report.get("finetune", {}).get("seconds"),
            "sparsity": report.get("sparsity"), "removed_channels": report.get("removed_fraction"),
            "macs_ratio": round(report["macs_after"] / report["macs_before"], 3) if "macs_after" in report else None,
            "latency_ratio": round(process["p50_ms"] / reference["process"]["p50_ms"], 3),
            "gzip_ratio": round(summary.gzip_bytes / reference["gzip_bytes"], 3),
        })
        print(f"pruning {name} ({spec}): top-1 {accuracy['converted_top1']}%, p50 {process['p50_ms']} ms, "
              f"gzip {summary.gzip_bytes / 1e6:.2f} MB, {seconds:.0f} s", flush=True)
    return rows
