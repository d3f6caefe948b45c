"""``tillsight report``: the table and plot come from what the bundles measured."""

from __future__ import annotations

import json
import shutil

import cv2
import pytest

from tillsight import cli
from tillsight.demo import ASSETS
from tillsight.report import summarize_bundle


@pytest.mark.integration
def test_report_tables_and_plots_each_bundle(bundle_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(bundle_dir), str(ASSETS / "classifier"), "--out", str(out)]) == 0
    table = (out / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| raspberry-pi-4") or line.startswith("| classifier")]
    assert len(rows) == 2
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    accuracy = manifest["metrics"]["accuracy"]
    assert f"{accuracy['converted_top1']:.2f}%" in rows[0] and f"{accuracy['top1_agreement']:.2f}%" in rows[0]
    shipped = json.loads((ASSETS / "classifier" / "manifest.json").read_text())["metrics"]["accuracy"]
    assert "classifier (generic-x86-cpu)" in rows[1] and f"{shipped['converted_top1']:.2f}%" in rows[1]
    from tillsight.host import HostInfo

    assert "| inference p50 / p95 ms |" in table
    assert manifest["metrics"]["latency_host"]["host"] == HostInfo.current().describe()  # as tillsight benchmark names it
    assert f"{HostInfo.current().describe()} (at conversion)" in table
    image = cv2.imread(str(out / "report.png"))
    assert image.shape == (600, 1080, 3) and (image < 250).any(axis=2).mean() > 0.01  # axes, points, labels drawn
    assert "report.png" in capsys.readouterr().out


@pytest.mark.integration
def test_gzip_size_is_measured_and_smaller_for_sparse_weights(bundle_dir, tiny_model_file, photos, tmp_path):
    import gzip

    import tillsight

    dense = summarize_bundle(bundle_dir)
    model = (bundle_dir / "model.tflite").read_bytes()
    assert dense.model_bytes == len(model)
    assert dense.gzip_bytes == len(gzip.compress(model, compresslevel=9))
    # the same model with half of every kernel zeroed (one shot): the same size, a smaller download
    pruning = tillsight.PruningOptions.from_spec("unstructured:0.5", base=tillsight.PruningOptions(finetune_epochs=0))
    sparse_bundle = tillsight.convert(
        tiny_model_file,
        "raspberry-pi-4",
        calibration=photos.train_list,
        labels=photos.labels_file,
        out=tmp_path,
        options=tillsight.ConversionOptions(pruning=pruning),
    )
    sparse = summarize_bundle(sparse_bundle.path)
    assert abs(sparse.model_bytes - dense.model_bytes) < 0.05 * dense.model_bytes
    assert sparse.gzip_bytes / sparse.model_bytes < 0.9 * dense.gzip_bytes / dense.model_bytes


def test_a_bundle_without_accuracy_gets_a_table_but_no_plot(tmp_path, capsys):
    bundle = shutil.copytree(ASSETS / "classifier", tmp_path / "noeval")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["metrics"]["accuracy"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["report", str(bundle), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "n/a" in out and "no plot" in out and not (tmp_path / "r" / "report.png").exists()


def test_a_tampered_bundle_is_refused(tmp_path, capsys):
    bundle = shutil.copytree(ASSETS / "classifier", tmp_path / "tampered")
    data = bytearray((bundle / "model.tflite").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.tflite").write_bytes(bytes(data))
    assert cli.main(["report", str(bundle), "--out", str(tmp_path / "r")]) == 1
    assert "does not match its manifest" in capsys.readouterr().err


def test_report_needs_an_output_folder(capsys):
    """It wrote into ./tillsight-report/, a default the README never mentioned, replacing what was there."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", str(ASSETS / "classifier")])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
