"""The shape of ``results.json``: what ``run_benchmarks.py`` writes and ``render_results.py`` reads.

One set of msgspec Structs (the library the package's manifests and profiles use), so the
producer and the report cannot drift apart: a run's results are checked against them before
they are written, and the report reads them back through them. Keys a Struct does not name are
kept out (older runs carry a few); a missing or mistyped figure is refused with its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec


class Process(msgspec.Struct, kw_only=True, frozen=True):
    """A process that runs only one model (``probe.py``): medians over fresh processes."""

    cold_start_s: float
    peak_rss_mb: float
    p50_ms: float
    p95_ms: float
    engine: str


class Baseline(msgspec.Struct, kw_only=True, frozen=True):
    """A recipe tillsight is compared with, timed in the benchmark's own process."""

    name: str
    bytes: int
    top1: float
    agreement: float
    p50_ms: float
    p95_ms: float


class BundleRow(msgspec.Struct, kw_only=True, frozen=True):
    """One profile's bundle: its manifest's figures (``tillsight.report.BundleSummary``) and its process."""

    name: str
    path: str
    backend: str
    model_bytes: int
    gzip_bytes: int
    float_top1: float
    converted_top1: float
    top1_drop: float
    top1_agreement: float
    eval_images: int | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    threads: int
    host: str
    model_sha256: str = ""
    conversion_s: float
    process: Process


class Latency(msgspec.Struct, kw_only=True, frozen=True):
    """Percentiles of one stage (``tillsight.bundle_metrics.LatencyStats``; runs before 2026-12-05 kept p50 and p95)."""

    p50_ms: float
    p95_ms: float
    p99_ms: float | None = None
    runs: int | None = None


class PipelineRow(msgspec.Struct, kw_only=True, frozen=True):
    """The checkout pipeline on a video whose every frame shows a product, against one bare invoke."""

    bundle: str
    threads: int
    frames: int
    classified: int
    fps: float
    bare_inference_ms: float
    bare_bound_fps: float
    ratio: float
    stage_latency: dict[str, Latency]
    frame_age: Latency


#: One seed's run of a row that trains: ``seed`` and each figure that changes with it.
SeedRun = dict[str, float]


class PruningRow(msgspec.Struct, kw_only=True, frozen=True):
    """A pruned bundle; its accuracy figures are medians over ``runs``."""

    name: str
    setting: str
    epochs: int
    distilled: bool = False
    profile: str
    path: str
    model_bytes: int
    gzip_bytes: int
    float_top1: float
    pruned_top1: float | None
    converted_top1: float
    top1_agreement: float
    drop_vs_unpruned_float: float
    process: Process
    conversion_s: float
    finetune_s: float | None = None
    one_shot_s: float | None = None
    sparsity: float | None = None
    removed_channels: float | None = None
    macs_ratio: float | None = None
    latency_ratio: float
    gzip_ratio: float
    runs: list[SeedRun] = []


class QatRow(msgspec.Struct, kw_only=True, frozen=True):
    """Quantization-aware fine-tuning's bundle against the post-training one."""

    profile: str
    epochs: int
    path: str
    float_top1: float
    converted_top1: float
    top1_drop: float
    top1_agreement: float
    reference_agreement: float
    qat_s: float
    conversion_s: float
    process: Process
    latency_ratio: float
    runs: list[SeedRun] = []


class StudentRow(msgspec.Struct, kw_only=True, frozen=True):
    """A distilled student's int8 bundle against the teacher's."""

    student: str
    started_from_teacher: bool = False
    student_input: list[int]
    epochs: int
    profile: str
    path: str
    teacher_float_top1: float
    student_float_top1: float
    student_int8_top1: float
    teacher_agreement: float
    kept_start: bool | None = None
    teacher_parameters: int
    student_parameters: int
    model_bytes: int
    distill_s: float
    process: Process
    latency_ratio: float
    runs: list[SeedRun] = []


class LaterRun(msgspec.Struct, kw_only=True, frozen=True):
    """A later run whose rows replaced this run's (``merge_rows.py``)."""

    rows: list[str]
    date: str
    wall_time_s: float
    arguments: list[str]


class BenchResults(msgspec.Struct, kw_only=True, frozen=True):
    """One ``run_benchmarks.py`` run: every row measured in it, and the rows later runs replaced."""

    host: str
    date: str
    model: str
    arguments: list[str] = []
    input_size: int
    crop: float = 1.0
    eval_images: int
    versions: dict[str, str]
    wall_time_s: float
    baselines: list[Baseline]
    plain_int8_gzip_bytes: int
    bundles: list[BundleRow]
    plain_int8_process: Process | None = None  # runs before 2026-12-04 timed the plain recipe in-process only
    bare_process: Process
    pipeline: PipelineRow
    pruning: list[PruningRow] = []
    qat: QatRow | None = None
    student: StudentRow | None = None
    later_runs: list[LaterRun] = []

    def baseline(self, prefix: str) -> Baseline:
        """The baseline whose name starts with ``prefix`` (``Keras float``, ``TFLite float``, ``plain``, ``OpenVINO FP32``)."""
        return next(row for row in self.baselines if row.name.startswith(prefix))

    def reference(self) -> BundleRow:
        """The bundle the pipeline, footprint and compression rows are measured against."""
        return next(bundle for bundle in self.bundles if bundle.name == self.pipeline.bundle)


def validated(results: Any) -> BenchResults:
    """``results`` (dicts, Structs or both, as a run assembles them) checked against :class:`BenchResults`.

    Raises:
        msgspec.ValidationError: A figure is missing or of the wrong type; the message names its path.
    """
    return msgspec.json.decode(msgspec.json.encode(results), type=BenchResults)


def load_results(path: Path) -> BenchResults:
    """A ``results.json`` file, decoded and checked."""
    return msgspec.json.decode(path.read_bytes(), type=BenchResults)


def results_json(results: BenchResults) -> str:
    """The indented JSON text ``results.json`` holds."""
    return msgspec.json.format(msgspec.json.encode(results).decode(), indent=2) + "\n"
