"""bench/RESULTS.md from results.json: tables of ratios against same-run baselines, and the targets.

python bench/render_results.py   # RESULTS.md again from bench/results.json, e.g. after editing ANALYSIS.md
"""

from __future__ import annotations

from pathlib import Path

from results_schema import Baseline, BenchResults, BundleRow, PipelineRow, Process, PruningRow, QatRow, StudentRow, load_results
from sections import SECTION_FILES  # measured apart (bench/lanes.py, bench/tune.py); kept before the targets

#: Causes of the misses, measured and written by hand; appended to RESULTS.md when present.
ANALYSIS = Path(__file__).resolve().parent / "ANALYSIS.md"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.3g}x" if base else "n/a"


def met(ok: bool, text: str) -> str:
    """A target's verdict with the measured figure, so a miss says by how much."""
    return f"met ({text})" if ok else f"MISSED ({text})"


def render_markdown(results: BenchResults) -> str:
    """RESULTS.md: header, baselines, bundles per profile, footprint, pipeline, compression rows, targets, analysis."""
    plain, reference = results.baseline("plain"), results.reference()
    lines = _header(results) + _baselines_section(results) + _bundles_section(results, plain)
    lines += _footprint_section(results, reference) + _pipeline_section(results.pipeline)
    lines += _pruning_section(results.pruning, reference) + _training_section(results, reference)
    for section in SECTION_FILES:
        if section.exists():
            lines += section.read_text(encoding="utf-8").rstrip().splitlines() + [""]
    lines += ["## Targets", ""] + _bundle_targets(results, plain, reference.process)
    lines += _pruning_targets(results.pruning)
    lines += _training_targets(results)
    lines.append("")
    lines.append("![accuracy vs latency, marker area by model size](plots/accuracy_latency.png)")
    if ANALYSIS.exists():  # written by hand from measurements, for the misses a table cannot explain
        lines += ["", ANALYSIS.read_text(encoding="utf-8").rstrip()]
    return "\n".join(lines) + "\n"


def _header(results: BenchResults) -> list[str]:
    return [
        "# Benchmark results",
        "",
        f"Host: {results.host}. Date: {results.date}. Run time: {results.wall_time_s / 60:.1f} minutes.",
        f"Model: `{results.model.rsplit('/', 1)[-1]}` (the sample: `samples/train_grocery_classifier.py`, ImageNet-pretrained "
        f"EfficientNet-Lite0 fine-tuned on the train photos), input {results.input_size}x{results.input_size}, centre crop "
        f"{results.crop:g}, evaluated on the {results.eval_images} held-out val photos of the grocery-store data.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results.versions.items()) + ".",
        "Latency is the median (p50) and p95 of single-image inference on this 2-core host; a device differs, the ratios carry over better.",
        "Refresh with `python bench/run_benchmarks.py` (see its docstring). This run: "
        f"`python bench/run_benchmarks.py {' '.join(results.arguments)}`".rstrip()
        + " (rows its arguments skip are absent).",
        *_later_rows(results),
        "",
    ]


def _later_rows(results: BenchResults) -> list[str]:
    """Rows re-measured by a later run of the same script on the same host, merged in by ``bench/merge_rows.py``."""
    return [
        f"The {', '.join(_row_name(row) for row in later.rows)} rows come from a later run on the same host and model ({later.date}, "
        f"{later.wall_time_s / 60:.1f} minutes, with its own post-training int8 reference measured again): "
        f"`python bench/run_benchmarks.py {' '.join(later.arguments)}`."
        for later in results.later_runs
    ]


def _row_name(row: str) -> str:
    """``qat`` as it is; ``pruning:unstructured`` (one pruning row) as ``unstructured pruning``."""
    return f"{row.split(':', 1)[1]} pruning" if row.startswith("pruning:") else row


def _baselines_section(results: BenchResults) -> list[str]:
    keras = results.baseline("Keras float")
    lines = [
        "## Baselines (measured in the same run)",
        "",
        _row(["baseline", "size MB", "top-1", "agreement with float", "latency p50 / p95 ms", "p50 vs Keras predict"]),
        _row(["---", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for row in results.baselines:
        lines.append(
            _row(
                [
                    row.name,
                    f"{row.bytes / 1e6:.2f}",
                    f"{row.top1:.2f}%",
                    f"{row.agreement:.2f}%",
                    f"{row.p50_ms:.3f} / {row.p95_ms:.3f}",
                    _ratio(row.p50_ms, keras.p50_ms),
                ]
            )
        )
    return lines + [""]


def _bundles_section(results: BenchResults, plain: Baseline) -> list[str]:
    tfl_float = results.baseline("TFLite float")
    lines = [
        "## tillsight bundles, per device profile",
        "",
        "Latency at 2 threads, in a fresh process that runs only the bundle (median of 3 processes); the plain",
        "recipe's int8 model is timed the same way (a bare ai-edge-litert process at 2 threads) for its column;",
        "Edge TPU profiles run on the CPU fallback here (no Edge TPU), OpenVINO profiles on the CPU plugin (no iGPU).",
        "",
        _row(
            [
                "profile",
                "backend / engine",
                "size MB (gzip)",
                "float top-1",
                "converted top-1",
                "drop",
                "agreement",
                "p50 / p95 ms",
                "p50 vs plain int8",
                "p50 vs TFLite float",
                "cold start s",
                "peak RSS MB",
                "conversion s",
            ]
        ),
        _row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ]
    plain_process = results.plain_int8_process or plain  # runs before that measurement timed it in-process
    for b in results.bundles:
        process = b.process
        lines.append(
            _row(
                [
                    b.name,
                    f"{b.backend} / {process.engine}",
                    f"{b.model_bytes / 1e6:.2f} ({b.gzip_bytes / 1e6:.2f})",
                    f"{b.float_top1:.2f}%",
                    f"{b.converted_top1:.2f}%",
                    f"{b.top1_drop:.2f}",
                    f"{b.top1_agreement:.2f}%",
                    f"{process.p50_ms:.3f} / {process.p95_ms:.3f}",
                    _ratio(process.p50_ms, plain_process.p50_ms),
                    _ratio(process.p50_ms, tfl_float.p50_ms),
                    f"{process.cold_start_s:.2f}",
                    f"{process.peak_rss_mb:.0f}",
                    f"{b.conversion_s:.0f}",
                ]
            )
        )
    return lines + [""]


def _footprint_section(results: BenchResults, reference: BundleRow) -> list[str]:
    bare, ours = results.bare_process, reference.process
    openvino = results.baseline("OpenVINO FP32")
    return [
        f"Plain int8 recipe gzip size: {results.plain_int8_gzip_bytes / 1e6:.2f} MB. OpenVINO FP32 top-1 {openvino.top1:.2f}%.",
        "",
        f"## Process footprint ({reference.name} bundle vs a bare ai-edge-litert process on the same model)",
        "",
        _row(["process", "cold start s (process start to first result)", "peak RSS MB", "p50 ms"]),
        _row(["---", "---:", "---:", "---:"]),
        _row(
            [
                "bare ai-edge-litert interpreter",
                f"{bare.cold_start_s:.2f}",
                f"{bare.peak_rss_mb:.0f}",
                f"{bare.p50_ms:.3f}",
            ]
        ),
        _row(["tillsight.load + classify", f"{ours.cold_start_s:.2f}", f"{ours.peak_rss_mb:.0f}", f"{ours.p50_ms:.3f}"]),
        _row(["ratio", _ratio(ours.cold_start_s, bare.cold_start_s), _ratio(ours.peak_rss_mb, bare.peak_rss_mb), ""]),
        "",
    ]


def _pipeline_section(pipeline: PipelineRow) -> list[str]:
    stage_latency, age = pipeline.stage_latency, pipeline.frame_age
    stages = ", ".join(f"{name} {values.p50_ms:.2f}/{values.p95_ms:.2f}" for name, values in stage_latency.items())
    return [
        f"## Checkout pipeline ({pipeline.bundle} bundle, {pipeline.threads} threads, a video whose every frame shows a product)",
        "",
        f"- {pipeline.fps:.0f} frames/s through the pipeline against a bare-inference bound of {pipeline.bare_bound_fps:.0f} "
        f"frames/s (1 / {pipeline.bare_inference_ms:.3f} ms): ratio {pipeline.ratio:.2f}.",
        f"- Stage latency p50/p95 ms: {stages}.",
        f"- Frame age at decision p50/p95/p99 ms: {age.p50_ms:.1f} / {age.p95_ms:.1f} / {age.p99_ms or 0:.1f}.",
        "- The bound is one invoke of this small model on this host. Each frame also pays the tray check and "
        "preprocessing on the inference thread before its invoke (stage latencies above), and video decoding on "
        "the capture thread, which shares the 2 cores; a model whose invoke takes tens of milliseconds, as on a "
        "Pi-class CPU, would make those fixed costs a small share. That has not been measured here.",
        "",
    ]


def _bundle_targets(results: BenchResults, plain: Baseline, ours: Process) -> list[str]:
    """The int8, pipeline and footprint targets, each met or missed by a measured amount."""
    lines = []
    for b in (b for b in results.bundles if b.backend == "tflite"):
        drop, agreement = b.top1_drop, b.top1_agreement
        drop_text = met(drop <= 0.5, f"{drop:.2f} points")
        agreement_text = met(agreement >= 99.0, f"{agreement:.2f}%, plain recipe {plain.agreement:.2f}%")
        versus_plain = met(agreement >= plain.agreement, f"{agreement - plain.agreement:+.2f} points")
        lines.append(
            f"- {b.name}: int8 drop <= 0.5 point: {drop_text}; agreement >= 99%: {agreement_text}; "
            f"agreement >= the plain recipe's: {versus_plain}"
        )
    for b in (b for b in results.bundles if b.backend == "openvino"):
        agreement_text = met(b.top1_agreement >= 98.5, f"{b.top1_agreement:.2f}%")
        lines.append(
            f"- {b.name} (OpenVINO): agreement >= 98.5%: {agreement_text}, on one calibration draw (the profile rows "
            "calibrate once, on the train list)"
        )
    ratio, bare = results.pipeline.ratio, results.bare_process
    lines.append(f"- pipeline >= 0.9x the bare-inference bound: {met(ratio >= 0.9, f'{ratio:.2f}x')}")
    rss, cold = ours.peak_rss_mb / bare.peak_rss_mb, ours.cold_start_s / bare.cold_start_s
    lines.append(
        f"- peak RSS <= 1.5x bare: {met(rss <= 1.5, f'{rss:.2f}x')}; cold start <= 1.5x bare: {met(cold <= 1.5, f'{cold:.2f}x')}"
    )
    return lines


def _varied(row: PruningRow | QatRow | StudentRow, key: str, unit: str = "%") -> str:
    """A figure's median over the seeds with their range beside it: ``79.39% (78.72-81.08, 3 seeds)``."""
    values = [run[key] for run in row.runs if run.get(key) is not None]
    if len(values) < 2:
        return f"{getattr(row, key):.2f}{unit}" + (" (1 run: no training)" if row.runs and key != "finetune_s" else "")
    return f"{getattr(row, key):.2f}{unit} ({min(values):.2f}-{max(values):.2f}, {len(values)} seeds)"


def _pruning_section(rows: list[PruningRow], reference: BundleRow) -> list[str]:
    """The pruned bundles against the unpruned bundle of the same profile."""
    if not rows:
        return []
    lines = [
        f"## Pruning ({rows[0].profile}, fine-tuned on the train photos; medians over the seeds, their range beside)",
        "",
        "Against the unpruned int8 bundle of the same profile above (latency measured the same way, same run).",
        "One-shot s: choosing and compensating the cuts on the calibration images; fine-tune s: the recovery training.",
        *(
            [
                "A row that trains nothing (0 epochs) over several seeds: each seed draws its calibration images (the train list "
                "shuffled by the seed; seed 0 as it is), what moves a one-shot result."
            ]
            if any(row.epochs == 0 and len(row.runs) > 1 for row in rows)
            else []
        ),
        "",
        _row(
            [
                "setting",
                "epochs",
                "pruned float top-1",
                "int8 top-1",
                "drop vs unpruned float",
                "gzip MB (vs unpruned int8)",
                "p50 ms (vs unpruned int8)",
                "MACs vs unpruned",
                "one-shot s",
                "fine-tune s",
            ]
        ),
        _row(["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
        _row(
            [
                "unpruned (reference)",
                "",
                f"{reference.float_top1:.2f}% (float)",
                f"{reference.converted_top1:.2f}%",
                f"{reference.top1_drop:.2f}",
                f"{reference.gzip_bytes / 1e6:.3f}",
                f"{reference.process.p50_ms:.3f}",
                "1x",
                "",
                "",
            ]
        ),
    ]
    for row in rows:
        finetune = f"{row.finetune_s:.0f}" if row.finetune_s else "0"
        lines.append(
            _row(
                [
                    row.setting,
                    str(row.epochs),
                    _varied(row, "pruned_top1"),
                    _varied(row, "converted_top1"),
                    _varied(row, "drop_vs_unpruned_float", ""),
                    f"{row.gzip_bytes / 1e6:.3f} ({row.gzip_ratio:.2f}x)",
                    f"{row.process.p50_ms:.3f} ({row.latency_ratio:.2f}x)",
                    f"{row.macs_ratio:.2f}x" if row.macs_ratio else "1x",
                    f"{row.one_shot_s:.0f}" if row.one_shot_s else "",
                    finetune,
                ]
            )
        )
    return lines + [""]


#: Structured pruning targets: the fraction removed -> (latency ratio, top-1 drop in points) it must reach.
_CHANNEL_TARGETS = {"0.3": (0.7, 1.5), "0.5": (0.5, 3.0)}


def _pruning_targets(rows: list[PruningRow]) -> list[str]:
    lines = []
    for row in rows:
        drop = row.drop_vs_unpruned_float
        if row.setting.startswith("channels"):
            fraction = row.setting.split()[0].split(":")[1]
            if fraction not in _CHANNEL_TARGETS:
                continue
            max_latency, max_drop = _CHANNEL_TARGETS[fraction]
            latency = met(row.latency_ratio <= max_latency, f"{row.latency_ratio:.2f}x")
            minutes = (row.finetune_s or 0) / 60
            lines.append(
                f"- structured ({row.setting}) + int8: latency <= {max_latency}x unpruned int8: {latency}; "
                f"median drop <= {max_drop} points: {met(drop <= max_drop, f'{drop:.2f} points')}; "
                f"fine-tuning <= 15 min on 2 cores: {met(minutes <= 15, f'{minutes:.1f} min')}"
            )
        else:
            gzip_text = met(row.gzip_ratio <= 0.6, f"{row.gzip_ratio:.2f}x")
            lines.append(
                f"- unstructured ({row.setting}, {row.epochs} epochs) + int8: gzip <= 0.6x unpruned int8: "
                f"{gzip_text}; drop <= 1.0 point: {met(drop <= 1.0, f'{drop:.2f} points')}"
            )
    return lines


def _training_section(results: BenchResults, reference: BundleRow) -> list[str]:
    """Quantization-aware fine-tuning and the distilled student against the plain int8 bundle."""
    qat, student = results.qat, results.student
    lines = []
    if qat:
        lines += [
            f"## Quantization-aware fine-tuning ({qat.profile}, {qat.epochs} epochs on the train photos from the compensated "
            "int8 weights, distilled from the float model; medians over the seeds)",
            "",
            _row(["bundle", "float top-1", "int8 top-1", "drop", "agreement with float", "p50 ms", "QAT s"]),
            _row(["---", "---:", "---:", "---:", "---:", "---:", "---:"]),
            _row(
                [
                    "post-training int8 (reference)",
                    f"{reference.float_top1:.2f}%",
                    f"{reference.converted_top1:.2f}%",
                    f"{reference.top1_drop:.2f}",
                    f"{reference.top1_agreement:.2f}%",
                    f"{reference.process.p50_ms:.3f}",
                    "",
                ]
            ),
            _row(
                [
                    "QAT int8",
                    f"{qat.float_top1:.2f}%",
                    _varied(qat, "converted_top1"),
                    _varied(qat, "top1_drop", ""),
                    _varied(qat, "top1_agreement"),
                    f"{qat.process.p50_ms:.3f}",
                    f"{qat.qat_s:.0f}",
                ]
            ),
            "",
        ]
    if student:
        lines += [
            f"## Distilled student ({student.student} at {'x'.join(map(str, student.student_input))} px, "
            f"{student.epochs} epochs on the train photos, "
            f"{_student_start(student)}; medians over the seeds)",
            "",
            _row(["model", "parameters", "float top-1", "int8 top-1", "p50 ms int8 (vs teacher)", "distill s"]),
            _row(["---", "---:", "---:", "---:", "---:", "---:"]),
            _row(
                [
                    "teacher",
                    f"{student.teacher_parameters:,}",
                    f"{student.teacher_float_top1:.2f}%",
                    f"{reference.converted_top1:.2f}%",
                    f"{reference.process.p50_ms:.3f}",
                    "",
                ]
            ),
            _row(
                [
                    student.student,
                    f"{student.student_parameters:,}",
                    _varied(student, "student_float_top1"),
                    _varied(student, "student_int8_top1"),
                    f"{student.process.p50_ms:.3f} ({student.latency_ratio:.2f}x)",
                    f"{student.distill_s:.0f}",
                ]
            ),
            "",
        ]
    return lines


def _student_start(student: StudentRow) -> str:
    if student.started_from_teacher:
        return "from the teacher's weights: same architecture"
    return "from ImageNet weights" if student.student.startswith("efficientnet") else "from scratch"


def _training_targets(results: BenchResults) -> list[str]:
    lines = []
    rows = results.pruning
    plain = next((r for r in rows if r.setting.startswith("channels") and not r.distilled), None)
    distilled = next((r for r in rows if r.distilled), None)
    if plain and distilled:
        lost = plain.float_top1 - plain.converted_top1
        lost_distilled = distilled.float_top1 - distilled.converted_top1
        recovered = (lost - lost_distilled) / lost if lost > 0 else 0.0
        lines.append(
            f"- distillation recovers >= half of the points {plain.setting} loses without it (same epochs): "
            + met(recovered >= 0.5, f"{recovered:.0%} ({lost:.2f} -> {lost_distilled:.2f} points lost)")
        )
    student = results.student
    if student:
        gap, ratio = student.teacher_float_top1 - student.student_int8_top1, student.latency_ratio
        lines.append(
            f"- student {student.student}: int8 latency <= 0.5x the teacher's: {met(ratio <= 0.5, f'{ratio:.2f}x')}; "
            f"median int8 top-1 within 2 points of the teacher's float top-1: {met(gap <= 2.0, f'{gap:.2f} points below')}"
        )
    qat = results.qat
    if qat:
        agreement = qat.top1_agreement
        reference = qat.reference_agreement
        lines.append(
            f"- QAT: median int8 agreement with float >= post-training int8's ({reference:.2f}%): "
            f"{met(agreement >= reference, f'{agreement:.2f}%')}; >= 98.5%: {met(agreement >= 98.5, f'{agreement:.2f}%')}"
        )
    return lines


if __name__ == "__main__":  # after editing ANALYSIS.md or a section file: python bench/render_results.py
    HERE = Path(__file__).resolve().parent
    (HERE / "RESULTS.md").write_text(render_markdown(load_results(HERE / "results.json")), encoding="utf-8")
