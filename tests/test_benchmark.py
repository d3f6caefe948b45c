"""`tillsight benchmark`: device figures from a fresh process, budgets, JSON that `report` reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tillsight
from tillsight import cli
from tillsight.benchmarking import read_benchmark
from tillsight.demo import ASSETS
from tillsight.errors import OptionsError
from tillsight.host import describe_cpu
from tillsight.runtimes import available_cores

PI4_CPUINFO = """processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU part	: 0xd08

Hardware	: BCM2835
Model		: Raspberry Pi 4 Model B Rev 1.4
"""


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(ASSETS / "classifier", tmp_path / "kiosk-bundle"))


def _set_budget(bundle: Path, **budgets: float) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["profile"]["budgets"].update(budgets)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_benchmark_measures_a_fresh_process_and_writes_json_report_reads(bundle: Path, tmp_path: Path, capsys):
    out = tmp_path / "device.json"
    assert cli.main(["benchmark", str(bundle), "--frames", "15", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    document = read_benchmark(out)
    (result,) = document.results
    assert document.host.cpu and "unknown" not in document.host.cpu.lower() and document.host.cpu in table
    assert document.versions["tillsight"] == tillsight.__version__ and "ai-edge-litert" in document.versions
    manifest = tillsight.read_bundle(bundle).manifest
    assert result.model_sha256 == manifest.artifacts["model.tflite"].sha256
    assert result.engine.startswith("ai_edge_litert") and result.threads == min(manifest.runtime.threads, available_cores())
    assert result.classify.runs == result.invoke.runs == 15
    for stats in (result.classify, result.invoke):
        assert 0 < stats.p50_ms <= stats.p95_ms <= stats.p99_ms
    assert 0 < result.cold_start_s < 30 and result.peak_rss_bytes > 20e6
    assert result.source == "synthetic 1280x720 frame" and result.budgets == ()  # the demo profile sets none

    assert cli.main(["report", str(bundle), "--benchmark", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"{result.invoke.p50_ms:.2f} / {result.invoke.p95_ms:.2f}" in report
    assert (
        f"Inference (the model alone, not frame preparation) measured on: {document.host.describe()} (tillsight benchmark)."
        in report
    )


def test_the_worker_never_imports_tensorflow_and_classifies_a_given_video(bundle: Path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tillsight._benchmark_worker",
            str(bundle),
            "--frames",
            "4",
            "--source",
            str(ASSETS / "checkout.mp4"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["imported_tensorflow"] is False
    assert measured["source"].startswith("checkout.mp4 (4 frames, ") and len(measured["classify_s"]) == 4


def test_over_budget_exits_non_zero_with_one_line_naming_budget_figure_and_profile(bundle: Path, tmp_path: Path, capsys):
    _set_budget(bundle, max_latency_ms=0.01)
    out = tmp_path / "over.json"
    assert cli.main(["benchmark", str(bundle), "--frames", "5", "--json", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "classify p50" in error and "max_latency_ms = 0.0 ms" in error and "'generic-x86-cpu'" in error
    (result,) = read_benchmark(out).results  # the figures are kept for the record
    assert not result.budgets[0].within and result.budgets[0].measured == result.classify.p50_ms

    assert cli.main(["benchmark", str(bundle), "--frames", "5", "--max-latency-ms", "10000", "--max-memory-mb", "5"]) == 1
    error = capsys.readouterr().err.strip()
    assert "peak RSS" in error and "max_memory_bytes = 5.0 MB" in error and "latency" not in error
    assert cli.main(["benchmark", str(bundle), "--frames", "5", "--max-latency-ms", "10000", "--max-memory-mb", "100000"]) == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--source", "no-such-video.mp4"], "does not exist: pass an image or a video file"),
    ],
)
def test_bad_benchmark_arguments_are_one_line(bundle: Path, capsys, args, expected):
    assert cli.main(["benchmark", str(bundle), *args]) == 1
    error = capsys.readouterr().err.strip()
    assert expected in error and len(error.splitlines()) == 1


def test_benchmark_from_python_names_the_figure_that_is_wrong(bundle: Path):
    """It said 'got 0 and None' for --frames 0 (the CLI now refuses that in argparse, see test_cli)."""
    with pytest.raises(OptionsError, match=r"^--frames must be at least 1 \(timed runs per measurement\), got 0$"):
        tillsight.benchmark([bundle], frames=0)
    with pytest.raises(OptionsError, match=r"^--threads must be at least 1, got -2$"):
        tillsight.benchmark([bundle], threads=-2)


def test_a_tampered_bundle_is_refused_by_the_measuring_process_in_one_line(bundle: Path, capsys):
    model = bundle / "model.tflite"
    original = model.read_bytes()
    model.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert cli.main(["benchmark", str(bundle), "--frames", "3"]) == 1
    error = capsys.readouterr().err.strip()
    assert "sha256" in error and len(error.splitlines()) == 1


def test_a_file_that_is_not_a_benchmark_is_refused_by_report(bundle: Path, tmp_path: Path, capsys):
    for text, expected in [
        ("{", "is not JSON"),
        ('{"format": "other"}', "is not a 'tillsight benchmark --json' file"),
        ('{"format": "tillsight-benchmark", "format_version": 1, "host": []}', "is malformed"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        assert cli.main(["report", str(bundle), "--benchmark", str(bad), "--out", str(tmp_path / "r")]) == 1
        error = capsys.readouterr().err.strip()
        assert expected in error and len(error.splitlines()) == 1


def test_the_cpu_is_named_from_cpuinfo_on_x86_and_on_a_raspberry_pi():
    assert describe_cpu("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nmodel\t: 1\n") == "AMD EPYC 7B13"
    assert describe_cpu(PI4_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)"
    armv8 = PI4_CPUINFO.replace("BogoMIPS", "model name\t: ARMv8 Processor rev 3 (v8l)\nBogoMIPS")  # 32-bit kernels
    assert describe_cpu(armv8) == "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)"
    assert describe_cpu(PI4_CPUINFO.replace("Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n", ""), "Coral Dev Board") == (
        "Coral Dev Board (Cortex-A72)"
    )


def test_a_bundle_on_stdin_must_be_a_tar_of_one(monkeypatch, capsys, tmp_path):
    import io
    import tarfile

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"these are not the bytes of a tar")))
    assert cli.main(["benchmark"]) == 1
    assert "standard input is not a tar of a bundle" in capsys.readouterr().err
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        (tmp_path / "notes.txt").write_text("no bundle here")
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(archive.getvalue())))
    assert cli.main(["benchmark"]) == 1
    assert "holds no bundle (no manifest.json" in capsys.readouterr().err
