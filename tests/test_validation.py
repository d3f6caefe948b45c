"""`tillsight val`: accuracy of a bundle on labeled photos, through the device's runtime."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

import tillsight
from tillsight import cli
from tillsight.demo import ASSETS
from tillsight.validation import validate

from .conftest import DATA, PhotoSplit


def test_val_reports_top1_top5_recall_and_confusions_that_add_up(tmp_path: Path, capsys):
    out, json_path = tmp_path / "val", tmp_path / "val.json"
    assert (
        cli.main(
            ["val", str(ASSETS / "classifier"), str(DATA / "val.txt"), "--out", str(out), "--json", str(json_path), "--quiet"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    data = json.loads(json_path.read_text())
    images = sum(1 for line in (DATA / "val.txt").read_text().splitlines() if line.strip())
    assert data["images"] == images and data["skipped"] == 0
    classes, confused = data["classes"], data["confused"]
    correct = sum(c["correct"] for c in classes)
    assert sum(c["images"] for c in classes) == images
    assert data["top1"] == round(100 * correct / images, 2) and data["top1"] <= data["top5"] <= 100
    assert sum(c["count"] for c in confused) == images - correct  # every miss is in exactly one pair
    assert [c["recall"] for c in classes] == sorted(c["recall"] for c in classes)  # worst first
    assert sum(map(sum, data["matrix"])) == images
    worst = classes[0]
    assert f"| {worst['label']} | {worst['images']} | {worst['correct']} |" in printed
    assert "## Most-confused pairs" in printed and (out / "val.md").read_text() in printed
    assert confused and data["top1"] < 100  # the demo model misses some of these photos: the picture shows where
    picture = cv2.imread(str(out / "confusion.png"))
    assert picture is not None and picture.shape[0] > 200


def test_no_confusion_picture_when_nothing_was_confused(tmp_path: Path):
    import dataclasses

    from tillsight.validation import write_confusion_picture

    report = validate(ASSETS / "classifier", DATA / "val.txt")
    assert write_confusion_picture(report, tmp_path / "some.png") == tmp_path / "some.png"
    perfect = dataclasses.replace(report, classes=tuple(dataclasses.replace(c, correct=c.images) for c in report.classes))
    assert write_confusion_picture(perfect, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


@pytest.mark.integration
def test_val_top1_equals_the_manifest_on_the_photos_the_conversion_used(bundle_dir: Path, photos: PhotoSplit):
    report = validate(bundle_dir, photos.eval_list, photos.labels_file)
    accuracy = tillsight.read_bundle(bundle_dir).manifest.metrics.accuracy
    assert report.images == accuracy.images
    assert report.top1 == pytest.approx(accuracy.converted_top1, abs=0.006)
    assert report.manifest_top1 == accuracy.converted_top1


def test_val_refuses_unlabeled_photos_and_a_wrong_labels_file_in_one_line(tmp_path: Path, capsys):
    unlabeled = tmp_path / "frames"
    unlabeled.mkdir()
    (unlabeled / "a.jpg").write_bytes(next(DATA.glob("val/**/*.jpg")).read_bytes())
    labels = tmp_path / "labels.txt"
    labels.write_text("apple\npear\n")
    for args, expected in [
        ([str(unlabeled)], "no labels"),
        ([str(DATA / "val.txt"), "--labels", str(labels)], "2 labels for a bundle"),
    ]:
        assert cli.main(["val", str(ASSETS / "classifier"), *args, "--out", str(tmp_path / "v"), "--quiet"]) == 1
        error = capsys.readouterr().err.strip()
        assert expected in error and len(error.splitlines()) == 1
