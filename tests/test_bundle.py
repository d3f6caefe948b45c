"""Bundles: atomic writes and manifest validation."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tillsight import BundleError, read_bundle
from tillsight.demo import ASSETS
from tillsight.jsonfile import json_ready
from tillsight.staging import staged_directory


def test_staged_directory_appears_only_when_complete(tmp_path):
    final = tmp_path / "out" / "raspberry-pi-4"
    with pytest.raises(RuntimeError):
        with staged_directory(final) as staging:
            (staging / "model.tflite").write_bytes(b"half")
            raise RuntimeError("converter crashed")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []
    with staged_directory(final) as staging:
        (staging / "model.tflite").write_bytes(b"v1")
    assert (final / "model.tflite").read_bytes() == b"v1"


def test_staged_outputs_are_readable_by_other_users_as_ordinary_files_are(tmp_path):
    from tillsight.staging import staged_file

    umask = os.umask(0o022)
    try:
        with staged_directory(tmp_path / "bundle") as staging:
            (staging / "model.tflite").write_bytes(b"v1")
        with staged_file(tmp_path / "bundle" / "extra.json") as temporary:
            temporary.write_text("{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bundle" / "extra.json").stat().st_mode & 0o777 == 0o644


def test_failed_run_keeps_the_previous_directory_and_success_replaces_it(tmp_path):
    final = tmp_path / "raspberry-pi-4"
    with staged_directory(final) as staging:
        (staging / "model.tflite").write_bytes(b"good")
    with pytest.raises(ValueError):
        with staged_directory(final) as staging:
            (staging / "model.tflite").write_bytes(b"bad")
            raise ValueError("accuracy check failed")
    assert (final / "model.tflite").read_bytes() == b"good"
    with staged_directory(final) as staging:
        (staging / "model.tflite").write_bytes(b"better")
    assert (final / "model.tflite").read_bytes() == b"better"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raspberry-pi-4"]


def test_not_a_bundle_and_malformed_manifests(tmp_path):
    with pytest.raises(BundleError, match="not a tillsight bundle"):
        read_bundle(tmp_path)
    broken = shutil.copytree(ASSETS / "classifier", tmp_path / "broken")  # the shipped int8 bundle
    manifest_path = broken / "manifest.json"
    original = json.loads(manifest_path.read_text())
    outputs = len(original["labels"])
    assert read_bundle(broken).manifest.labels == tuple(original["labels"])  # valid before it is broken
    manifest_path.write_text("{not json")
    with pytest.raises(BundleError, match="cannot be read as JSON"):
        read_bundle(broken)
    for change, phrase in [
        (lambda m: m.update(format_version=99), "upgrade tillsight"),
        (lambda m: m.pop("labels"), "malformed"),
        (lambda m: m["labels"].pop(), f"{outputs - 1} labels for {outputs} outputs"),
        (lambda m: m["runtime"].update(backend="tpu9000"), "malformed"),
        (lambda m: m.update(format="other"), "not a tillsight manifest"),
    ]:
        manifest = json.loads(json.dumps(original))
        change(manifest)
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match=phrase):
            read_bundle(broken)
    manifest_path.write_text(json.dumps(original))
    (broken / "model.tflite").unlink()
    with pytest.raises(BundleError, match="missing its artifact 'model.tflite'"):
        read_bundle(broken)


def test_leftovers_of_a_killed_run_are_cleaned_and_a_half_swapped_bundle_restored(tmp_path):
    import subprocess
    import sys

    from tillsight.staging import recover_interrupted

    final = tmp_path / "out" / "raspberry-pi-4"
    with staged_directory(final) as staging:
        (staging / "model.tflite").write_bytes(b"good")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "out" / f".tillsight-staging-raspberry-pi-4-{dead}-abc123"
    stale.mkdir()
    alive = tmp_path / "out" / f".tillsight-staging-raspberry-pi-4-{os.getpid()}-def456"
    alive.mkdir()  # a conversion still running in another thread of this process: left alone
    # Killed between moving the good bundle aside and moving the new one in:
    final.rename(tmp_path / "out" / ".raspberry-pi-4.replaced-0badf00d")
    recover_interrupted(final)
    assert (final / "model.tflite").read_bytes() == b"good"
    assert not stale.exists() and alive.exists()
    assert not list((tmp_path / "out").glob(".raspberry-pi-4.replaced-*"))


def test_malformed_metrics_are_refused_as_one_line_and_good_ones_read_as_types(tmp_path, capsys):
    from tillsight import cli

    bundle = shutil.copytree(ASSETS / "classifier", tmp_path / "bundle")
    manifest_path = bundle / "manifest.json"
    original = json.loads(manifest_path.read_text())
    metrics = read_bundle(bundle).manifest.metrics
    assert metrics.accuracy.top1_agreement == original["metrics"]["accuracy"]["top1_agreement"]
    assert metrics.latency_host.p50_ms == original["metrics"]["latency_host"]["p50_ms"]
    assert metrics.to_dict()["accuracy"] == original["metrics"]["accuracy"]  # the JSON form round-trips
    for change in [
        lambda m: m.update(metrics=[]),
        lambda m: m["metrics"]["accuracy"].update(top1_agreement="high"),
        lambda m: m["metrics"]["accuracy"].pop("images"),
        lambda m: m["metrics"]["latency_host"].update(p50_ms=True),
        lambda m: m["metrics"].update(
            pruning={"mode": "channels", "fraction": 0.3, "parameters_before": 9, "parameters_after": 5}
        ),
        lambda m: m["metrics"].update(conversion_seconds={"load model": "slow"}),
    ]:
        manifest = json.loads(json.dumps(original))
        change(manifest)
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="malformed"):
            read_bundle(bundle)
        for command in (["inspect", str(bundle)], ["report", str(bundle), "--out", str(tmp_path / "r")]):
            assert cli.main(command) == 1
            err = capsys.readouterr().err.strip()
            assert "malformed" in err and len(err.splitlines()) == 1 and "AttributeError" not in err


def test_a_manifest_written_before_the_fallbacks_rename_still_reads(tmp_path):
    from tillsight.profiles import BackendKind

    bundle = shutil.copytree(ASSETS / "classifier", tmp_path / "bundle")
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["runtime"].pop("backend_fallbacks", None)
    manifest["runtime"]["fallbacks"] = ["edgetpu"]
    manifest_path.write_text(json.dumps(manifest))
    runtime = read_bundle(bundle).manifest.runtime
    assert runtime.backend_fallbacks == (BackendKind.EDGETPU,)
    written = json_ready(runtime)  # as the manifest writes it again
    assert "fallbacks" not in written and written["backend_fallbacks"] == ["edgetpu"]


def test_a_format_1_manifest_reads_with_its_flat_training_figures_under_details(tmp_path):
    bundle = shutil.copytree(ASSETS / "classifier", tmp_path / "bundle")
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format_version"] == 1  # the shipped demo bundle was written by format 1
    finetune = {"epochs": 2, "seconds": 9.5, "loss": [0.9, 0.4], "photos": 40, "teacher_views": 2}
    manifest["metrics"]["pruning"] = {
        "mode": "channels", "target": 0.3, "parameters_before": 9, "parameters_after": 5, "kept_channels": 7,
        "prunable_channels": 10, "macs_before": 100, "macs_after": 60, "finetune": finetune, "groups": [[3, 2]],
    }  # fmt: skip
    manifest["metrics"]["qat"] = {**finetune, "activation_quantizers": 12, "finetune_source": "photos.txt"}
    quantization = manifest["profile"]["quantization"]  # the profile copy says calibration_samples, the old name
    quantization["calibration_samples"] += 1  # a value that is not the default
    manifest_path.write_text(json.dumps(manifest))
    assert read_bundle(bundle).manifest.profile.quantization.calibration_images == quantization["calibration_samples"]
    metrics = read_bundle(bundle).manifest.metrics
    assert metrics.pruning.fraction == 0.3 and metrics.pruning.details == {"groups": [[3, 2]]}
    assert metrics.pruning.finetune.loss == (0.9, 0.4) and metrics.pruning.finetune.details == {"teacher_views": 2}
    assert metrics.qat.training.epochs == 2 and metrics.qat.activation_quantizers == 12
    assert metrics.qat.training.details == {"teacher_views": 2}
    written = read_bundle(bundle).manifest.to_dict()  # written again, it is today's format
    assert written["format_version"] == 2 and written["metrics"]["qat"]["training"]["photos"] == 40
