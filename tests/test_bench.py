"""The benchmark's measuring pieces work (the benchmark itself is run by hand, not timed in tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tillsight.converters.tune_space import read_tune_record
from tillsight.demo import ASSETS

from .conftest import REPO


def probe(*args):
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "probe.py"), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_probe_measures_a_bundle_process_and_a_bare_interpreter_process(photos):
    image = str(photos.eval_items[0][0])
    ours = probe("tillsight", str(ASSETS / "classifier"), image, "--runs", "20")
    bare = probe("bare", str(ASSETS / "classifier" / "model.tflite"), image, "--runs", "20", "--size", "224")
    for row in (ours, bare):
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert 20 * 2**20 < row["peak_rss_bytes"] < 2**30  # this process's own peak, not its parent's
    assert ours["engine"].startswith("ai_edge_litert") and ours["label"] in (ASSETS / "classifier" / "manifest.json").read_text()


def _renderer():
    """``render_results.render_markdown`` and ``results_schema.validated`` (bench/ is a folder of scripts)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from render_results import render_markdown
        from results_schema import validated
    finally:
        sys.path.remove(str(REPO / "bench"))
    return render_markdown, validated


def test_results_md_is_what_the_committed_results_json_renders():
    render_markdown, validated = _renderer()
    results = validated(json.loads((REPO / "bench" / "results.json").read_text()))
    assert render_markdown(results) == (REPO / "bench" / "RESULTS.md").read_text(), (
        "bench/RESULTS.md differs from what bench/results.json renders: run python bench/render_results.py "
        "after editing ANALYSIS.md or a section file"
    )


def test_a_row_missing_a_figure_the_report_reads_is_refused_with_its_path():
    import msgspec

    _, validated = _renderer()
    results = json.loads((REPO / "bench" / "results.json").read_text())
    del results["pruning"][0]["gzip_ratio"]
    with pytest.raises(msgspec.ValidationError, match=r"gzip_ratio.*\$\.pruning\[0\]"):
        validated(results)


def test_results_render_says_which_targets_were_missed_and_by_how_much():
    render_markdown, validated = _renderer()
    process = {"engine": "litert", "p50_ms": 0.5, "p95_ms": 0.6, "cold_start_s": 0.3, "peak_rss_mb": 70}
    row = {"bytes": 1_000_000, "top1": 30.0, "agreement": 96.0, "p50_ms": 1.0, "p95_ms": 2.0}
    bundle = {
        "name": "raspberry-pi-4",
        "path": "out/raspberry-pi-4",
        "backend": "tflite",
        "threads": 4,
        "host": "test host",
        "model_bytes": 1_000_000,
        "gzip_bytes": 800_000,
        "float_top1": 30.0,
        "converted_top1": 30.0,
        "top1_drop": 0.0,
        "top1_agreement": 99.5,
        "process": process,
        "conversion_s": 20,
    }
    results = {
        "host": "test host",
        "date": "2026-01-01",
        "wall_time_s": 60,
        "model": "results/model/grocery_efficientnet_lite0.keras",
        "input_size": 96,
        "crop": 0.875,
        "eval_images": 10,
        "versions": {},
        "baselines": [
            {"name": n, **row}
            for n in ("Keras float (predict)", "TFLite float", "plain TFLiteConverter int8 (200 images)", "OpenVINO FP32 (CPU)")
        ],
        "plain_int8_gzip_bytes": 800_000,
        "bundles": [bundle, {**bundle, "name": "intel-nuc-iris-xe", "backend": "openvino", "top1_agreement": 98.3}],
        "bare_process": {**process, "cold_start_s": 0.25, "peak_rss_mb": 60},
        "pipeline": {
            "bundle": "raspberry-pi-4",
            "threads": 4,
            "frames": 1000,
            "classified": 1000,
            "fps": 100,
            "bare_bound_fps": 1000,
            "bare_inference_ms": 1.0,
            "ratio": 0.1,
            "stage_latency": {"inference": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 2.5, "runs": 9}},
            "frame_age": {"p50_ms": 5, "p95_ms": 6, "p99_ms": 7, "runs": 9},
        },
    }
    pruned = {
        "epochs": 3,
        "profile": "raspberry-pi-4",
        "float_top1": 30.0,
        "path": "out/pruned",
        "model_bytes": 500_000,
        "process": {**process, "p50_ms": 0.4},
        "top1_agreement": 90.0,
        "finetune_s": 100,
        "conversion_s": 120,
    }
    results["pruning"] = [
        {
            **pruned,
            "name": "structured",
            "setting": "channels:0.5",
            "pruned_top1": 29.0,
            "converted_top1": 28.5,
            "drop_vs_unpruned_float": 1.5,
            "gzip_bytes": 400_000,
            "gzip_ratio": 0.5,
            "latency_ratio": 0.8,
            "macs_ratio": 0.3,
        },
        {
            **pruned,
            "name": "unstructured",
            "setting": "unstructured:0.5",
            "pruned_top1": 29.0,
            "converted_top1": 28.0,
            "drop_vs_unpruned_float": 2.0,
            "gzip_bytes": 560_000,
            "gzip_ratio": 0.7,
            "latency_ratio": 1.0,
            "macs_ratio": None,
        },
        {
            **pruned,
            "name": "structured-distilled",
            "setting": "channels:0.5 + distill",
            "distilled": True,
            "pruned_top1": 29.5,
            "converted_top1": 29.0,
            "drop_vs_unpruned_float": 1.0,
            "gzip_bytes": 400_000,
            "gzip_ratio": 0.5,
            "latency_ratio": 0.8,
            "macs_ratio": 0.3,
        },
        {
            **pruned,
            "name": "channels-0.3-distilled",
            "setting": "channels:0.3 + distill",
            "distilled": True,
            "pruned_top1": 28.5,
            "converted_top1": 28.2,
            "drop_vs_unpruned_float": 1.8,
            "gzip_bytes": 600_000,
            "gzip_ratio": 0.7,
            "latency_ratio": 0.65,
            "macs_ratio": 0.5,
            "finetune_s": 1000,
            "runs": [
                {"seed": 0, "converted_top1": 28.2, "drop_vs_unpruned_float": 1.8, "pruned_top1": 28.5},
                {"seed": 1, "converted_top1": 26.0, "drop_vs_unpruned_float": 4.0, "pruned_top1": 26.5},
                {"seed": 2, "converted_top1": 29.0, "drop_vs_unpruned_float": 1.0, "pruned_top1": 29.1},
            ],
        },
    ]
    results["qat"] = {
        "profile": "raspberry-pi-4",
        "epochs": 2,
        "float_top1": 30.0,
        "converted_top1": 30.0,
        "top1_drop": 0.0,
        "top1_agreement": 98.0,
        "reference_agreement": 95.0,
        "qat_s": 60,
        "path": "out/qat",
        "conversion_s": 100,
        "latency_ratio": 1.0,
        "process": process,
    }
    results["student"] = {
        "student": "mobilenetv3-small",
        "student_input": [96, 96],
        "epochs": 15,
        "teacher_float_top1": 30.0,
        "student_float_top1": 26.0,
        "student_int8_top1": 25.0,
        "teacher_parameters": 800000,
        "student_parameters": 500000,
        "profile": "raspberry-pi-4",
        "path": "out/student",
        "teacher_agreement": 80.0,
        "model_bytes": 300_000,
        "process": {**process, "p50_ms": 0.2},
        "latency_ratio": 0.4,
        "distill_s": 300,
    }
    text = render_markdown(validated(results))  # checked as run_benchmarks.py checks its rows before writing them
    # distillation halves the points lost (1.5 -> 1.0 is a third: missed); the distilled row is not judged as plain pruning
    assert (
        "recovers >= half of the points channels:0.5 loses without it (same epochs): MISSED (33% (1.50 -> 1.00 points lost))"
        in text
    )
    assert "Model: `grocery_efficientnet_lite0.keras`" in text and "centre crop 0.875" in text
    assert (
        "structured (channels:0.3 + distill) + int8: latency <= 0.7x unpruned int8: met (0.65x); "
        "median drop <= 1.5 points: MISSED (1.80 points); fine-tuning <= 15 min on 2 cores: MISSED (16.7 min)"
    ) in text
    assert "| 28.20% (26.00-29.00, 3 seeds) |" in text and "| 1.80 (1.00-4.00, 3 seeds) |" in text  # median, and the spread
    assert "## Distilled student (mobilenetv3-small at 96x96 px, 15 epochs on the train photos, from scratch" in text
    assert (
        "student mobilenetv3-small: int8 latency <= 0.5x the teacher's: met (0.40x); median int8 top-1 within 2 points "
        "of the teacher's float top-1: MISSED (5.00 points below)"
    ) in text
    assert (
        "QAT: median int8 agreement with float >= post-training int8's (95.00%): met (98.00%); >= 98.5%: MISSED (98.00%)" in text
    )
    assert text.index("## Quantization-aware") < text.index("## Distilled student") < text.index("## Targets")
    assert (
        "structured (channels:0.5) + int8: latency <= 0.5x unpruned int8: MISSED (0.80x); median drop <= 3.0 points: met (1.50 points)"
        in text
    )
    assert (
        "unstructured (unstructured:0.5, 3 epochs) + int8: gzip <= 0.6x unpruned int8: MISSED (0.70x); drop <= 1.0 point: "
        "MISSED (2.00 points)"
    ) in text
    assert "| channels:0.5 | 3 | 29.00% | 28.50% | 1.50 | 0.400 (0.50x) | 0.400 (0.80x) | 0.30x |  | 100 |" in text
    assert text.index("## Pruning") < text.index("## Targets")
    assert "agreement >= 99%: met (99.50%, plain recipe 96.00%)" in text
    assert "- intel-nuc-iris-xe (OpenVINO): agreement >= 98.5%: MISSED (98.30%), on one calibration draw" in text
    assert "- intel-nuc-iris-xe: int8 drop" not in text  # the TFLite targets are TFLite's
    assert "pipeline >= 0.9x the bare-inference bound: MISSED (0.10x)" in text
    assert "peak RSS <= 1.5x bare: met (1.17x)" in text


def test_lanes_section_gives_ratios_to_one_lane_and_replaces_its_old_self_in_results():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from lanes import render
        from sections import splice
    finally:
        sys.path.remove(str(REPO / "bench"))
    row = {"bundle": "b", "profile": "generic-x86-cpu", "engine": "litert", "hint": None, "classified_share": 0.7, "runs": 5}
    rows = [
        {**row, "lanes": 1, "lane_fps": 60.0, "total_fps": 60.0, "baskets_ok": 5},
        {**row, "lanes": 2, "lane_fps": 33.0, "total_fps": 66.0, "baskets_ok": 4},
    ]
    section = render(rows, 5, "test host")
    assert "| generic-x86-cpu | litert | 2 | 33.0 | 0.55x | 66.0 | 1.10x | 4/5 |" in section
    results = "# Benchmark results\n\n## Pipeline\nx\n\n## Targets\n- t\n"
    once = splice(results, section)
    assert once.index("## Pipeline") < once.index("## Multi-lane kiosk") < once.index("## Targets")
    twice = splice(once, section.replace("33.0", "34.0"))
    assert twice.count("## Multi-lane kiosk") == 1 and "| 34.0 |" in twice and "| 33.0 |" not in twice
    assert twice.endswith("## Targets\n- t\n")


def test_tune_section_lists_every_candidate_and_the_winner(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from tune import render, section
    finally:
        sys.path.remove(str(REPO / "bench"))
    candidate = {"recipe": "r", "kind": "int8", "epochs": 0, "fraction": None, "student_size": None}
    record = {
        "profile": "raspberry-pi-4",
        "budget": {"max_latency_ms": 9.0, "max_top1_drop": 5.0, "max_memory_bytes": 512_000_000, "max_model_bytes": 16_000_000},
        "float_top1": 80.07,
        "measured_on": "this host",
        "seconds": 1500,
        "time_budget_s": 2700,
        "winner": "student-168",
        "winner_path": "out/raspberry-pi-4",
        "pareto": ["int8", "student-168"],
        "candidates": [
            {
                "candidate": {**candidate, "name": "int8"},
                "status": "measured",
                "note": "misses latency 10.04 ms > 9 ms",
                "top1": 79.05,
                "top1_drop": 1.01,
                "latency_ms": 10.04,
                "model_bytes": 4_070_000,
                "seconds": 125,
            },
            {"candidate": {**candidate, "name": "qat"}, "status": "skipped", "note": "same int8 graph as int8"},
            {
                "candidate": {**candidate, "name": "student-168"},
                "status": "measured",
                "note": "meets the budget",
                "top1": 77.0,
                "top1_drop": 3.07,
                "latency_ms": 6.1,
                "model_bytes": 4_070_000,
                "seconds": 480,
            },
        ],
    }
    (tmp_path / "tune.json").write_text(json.dumps(record))  # as tillsight tune writes it
    text = render(read_tune_record(tmp_path / "tune.json"), "tillsight tune ...", "plots/tune-9ms.png")
    assert text.startswith("### classify() p50 <= 9 ms\n") and "float model (80.07% on the val photos)" in text
    assert text.rstrip().endswith("(plots/tune-9ms.png)")
    # several searches (a budget int8 meets, one it misses) share the one section, each under its budget
    both = section([text, text.replace("9 ms", "3.4 ms")])
    assert both.startswith("## tillsight tune") and both.count("## tillsight tune") == 1 and both.count("### classify()") == 2
    assert "| int8 | r | 79.05% | 1.01 | 10.04 | 4.07 | 125 | yes | misses latency 10.04 ms > 9 ms |" in text
    assert "| qat | r |  |  |  |  |  |  | skipped: same int8 graph as int8 |" in text
    assert "**winner**: meets the budget" in text and "Winner: student-168." in text


def test_merged_rows_are_named_only_under_the_run_they_now_come_from(tmp_path):
    full, later, markdown = tmp_path / "full.json", tmp_path / "later.json", tmp_path / "RESULTS.md"
    committed = json.loads((REPO / "bench" / "results.json").read_text())
    committed["later_runs"] = [
        {"rows": ["qat", "student"], "date": "2026-12-01", "wall_time_s": 60.0, "arguments": ["--qat-epochs", "1"]},
        {"rows": ["pruning:unstructured"], "date": "2026-12-02", "wall_time_s": 60.0, "arguments": ["--prune-structured"]},
    ]
    full.write_text(json.dumps(committed))
    later.write_text(json.dumps({**committed, "later_runs": [], "arguments": ["--qat-epochs", "2"]}))
    for rows in (["qat"], ["pruning"]):
        merged = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "merge_rows.py"),
                str(full),
                str(later),
                "--rows",
                *rows,
                "--results-md",
                str(markdown),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert merged.returncode == 0, merged.stderr
    runs = json.loads(full.read_text())["later_runs"]
    # the first run keeps only the student row; "pruning" replaced the unstructured row, so its run is gone
    assert [run["rows"] for run in runs] == [["student"], ["qat"], ["pruning"]]
    assert markdown.read_text().count("The qat rows come from a later run") == 1
