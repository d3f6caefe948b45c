"""The sample scripts run as documented (the ones that need no trained model, on the shipped demo assets)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import pytest

from .conftest import REPO, REQUIRED_PROFILES

SAMPLES = REPO / "samples"


def run_sample(name, *args, cwd):
    return subprocess.run([sys.executable, str(SAMPLES / name), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_kiosk_app_builds_the_basket_from_callbacks(tmp_path):
    from tillsight.demo import demo_script

    placed = [placement.label for placement in demo_script().placements]
    result = run_sample("kiosk_app.py", "--audit", str(tmp_path / "audit.jsonl"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"basket: {placed}, total " in result.stdout
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(audit) == len(placed)


def test_checkout_demo_writes_an_annotated_video_without_a_display(tmp_path):
    out = tmp_path / "annotated.mp4"
    result = run_sample("checkout_demo.py", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(out))
    from tillsight.demo import demo_script

    script = demo_script()
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == script.frames  # every frame of the demo video, annotated
    assert f"basket: {script.expected_basket}" in result.stdout


FAMILIES = {
    "convert_for_raspberry_pi.py": ["raspberry-pi-4", "raspberry-pi-5"],
    "convert_for_coral.py": ["coral-usb", "coral-devboard"],
    "convert_for_intel.py": ["intel-nuc-iris-xe", "intel-celeron-uhd"],
    "convert_for_x86.py": ["generic-x86-cpu"],
}


def test_the_families_cover_every_shipped_profile():
    assert sorted(sum(FAMILIES.values(), [])) == sorted(REQUIRED_PROFILES)


@pytest.mark.parametrize("script", FAMILIES)
def test_conversion_scripts_list_their_profiles(script, tmp_path):
    result = run_sample(script, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--calibration" in result.stdout
    # A profile outside the family is refused, and the refusal lists the family's profiles.
    result = run_sample(script, "model.keras", "--calibration", "train.txt", "--profile", "no-such-device", cwd=tmp_path)
    assert result.returncode == 2
    listed = re.search(r"invalid choice: 'no-such-device' \(choose from (.*)\)", result.stderr)
    assert listed, result.stderr
    assert [name.strip(" '") for name in listed.group(1).split(",")] == FAMILIES[script]


@pytest.mark.integration
def test_a_conversion_script_converts_for_its_family(tiny_model_file, photos, tmp_path):
    # No --eval: the accuracy gate has its own tests; here the script's wiring is under test.
    result = run_sample(
        "convert_for_x86.py",
        str(tiny_model_file),
        "--calibration",
        str(photos.train_list),
        "--labels",
        str(photos.labels_file),
        "--out",
        str(tmp_path / "bundles"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generic-x86-cpu: " in result.stdout and "accuracy not measured" in result.stdout
    assert (tmp_path / "bundles" / "generic-x86-cpu" / "manifest.json").is_file()


@pytest.mark.integration
def test_a_conversion_script_prunes_with_the_profiles_mode(tiny_model_file, photos, tmp_path):
    result = run_sample(
        "convert_for_x86.py",
        str(tiny_model_file),
        "--calibration",
        str(photos.train_list),
        "--labels",
        str(photos.labels_file),
        "--out",
        str(tmp_path / "bundles"),
        "--prune",
        "0.25",
        "--finetune",
        str(photos.train_list),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pruned channels 0.25" in result.stdout  # the profile's mode
    bad = run_sample(
        "convert_for_x86.py", str(tiny_model_file), "--calibration", str(photos.train_list), "--prune", "lots", cwd=tmp_path
    )
    assert bad.returncode == 2 and "'lots' is not a pruning setting" in bad.stdout
