"""Bad conversion inputs fail before TensorFlow is imported, with the fix in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tillsight import CalibrationError, ConversionOptions, OptionsError, load_profile
from tillsight.converters.input_checks import check_conversion_inputs, keras_file_outputs

from ..conftest import DATA

CASES = """
import json, sys
from tillsight.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    results.append([code, "tensorflow" in sys.modules])
print(json.dumps(results))
"""


def _keras_file(path: Path, units: int) -> Path:
    """A .keras archive whose config names a Dense output of ``units`` (enough for the header checks)."""
    config = {
        "class_name": "Functional",
        "config": {
            "layers": [
                {"class_name": "InputLayer", "name": "image", "config": {}},
                {"class_name": "Dense", "name": "scores", "config": {"units": units}},
            ],
            "output_layers": ["scores", 0, 0],
        },
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    return path


def test_bad_convert_inputs_fail_in_one_line_without_importing_tensorflow(tmp_path: Path):
    photo = next(DATA.glob("val/**/*.jpg"))
    shutil.copy(photo, tmp_path / "model.jpg")
    (tmp_path / "empty").mkdir()
    model = _keras_file(tmp_path / "model.keras", 3)
    (tmp_path / "two.txt").write_text("apple\npear\n")
    common = ["--profile", "raspberry-pi-4", "--out", str(tmp_path / "out")]
    train, val = str(DATA / "train.txt"), str(DATA / "val.txt")
    gone = tmp_path / "gone.txt"  # a calibration list whose files were all moved away
    gone.write_text("".join(f"moved/photo{i}.jpg, 0\n" for i in range(211)))
    bundle = tmp_path / "published"  # an existing bundle: a second one must not be nested in it
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    cases = [
        (["convert", str(tmp_path / "missing.keras"), "--calibration", train, *common], "model path"),
        (["convert", str(tmp_path / "model.jpg"), "--calibration", train, *common], "is not a Keras model"),
        (["convert", str(model), "--calibration", str(tmp_path / "empty"), *common], "no image files found"),
        (
            ["convert", str(model), "--calibration", train, "--labels", str(tmp_path / "two.txt"), *common],
            "2 labels for a model with 3 outputs",
        ),
        (["convert", str(model), "--calibration", val, *common], "--min-calibration N"),
        (["convert", str(model), "--calibration", train, "--eval", str(tmp_path / "nowhere"), *common], "does not exist"),
        (["convert", str(model), *common], "quantizes to int8 (tflite): pass --calibration DATA"),
        (
            ["convert", str(model), "--calibration", str(gone), *common],
            f"lists 211 images but 211 do not exist (the first: {tmp_path / 'moved' / 'photo0.jpg'})",
        ),
        (
            ["convert", str(model), "--calibration", train, "--profile", "raspberry-pi-4", "--out", str(tmp_path / "two.txt")],
            f"{tmp_path / 'two.txt'} is a file, so",
        ),
        (
            ["convert", str(model), "--calibration", train, "--profile", "raspberry-pi-4", "--out", str(bundle / "again")],
            f"is inside the bundle {bundle}; pick a folder outside it (nothing was written",
        ),
    ]
    done = subprocess.run(
        [sys.executable, "-c", CASES, json.dumps([argv for argv, _ in cases])], capture_output=True, text=True, timeout=120
    )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(cases)  # one line each
    for (code, imported_tensorflow), error, (_, expected) in zip(results, errors, cases, strict=True):
        assert code == 1 and not imported_tensorflow and expected in error


def test_the_calibration_minimum_can_be_lowered_from_the_options():
    profile = load_profile("raspberry-pi-4")
    images = sum(1 for line in (DATA / "val.txt").read_text().splitlines() if line.strip())
    assert images < profile.quantization.min_calibration_images
    with pytest.raises(CalibrationError, match=f"has {images} image files.*--min-calibration"):
        check_conversion_inputs(None, profile, DATA / "val.txt", None, None, None)
    lowered = ConversionOptions(min_calibration_images=images).apply_to(profile)
    assert lowered.quantization.min_calibration_images == images
    check_conversion_inputs(None, lowered, DATA / "val.txt", None, None, None)
    with pytest.raises(OptionsError, match="at least 1 image"):
        ConversionOptions(min_calibration_images=0)


def test_the_output_width_is_read_from_a_keras_file_config(tmp_path: Path):
    assert keras_file_outputs(_keras_file(tmp_path / "m.keras", 81)) == 81
    (tmp_path / "broken.keras").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: no config
    assert keras_file_outputs(tmp_path / "broken.keras") is None
