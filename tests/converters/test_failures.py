"""Bad input: one-line error, exit 1, no output directory, and a good bundle never lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import tillsight
from tillsight import cli
from tillsight.bundle import sha256_of_file

from ..conftest import requires_keras


def run_cli(capfd, *argv: str) -> tuple[int, list[str]]:
    code = cli.main([str(a) for a in argv])
    return code, capfd.readouterr().err.strip().splitlines()


def convert_args(model, photos, out, **overrides) -> list[str]:
    args = {
        "--profile": "raspberry-pi-4",
        "--calibration": photos.train_list,
        "--labels": photos.labels_file,
        "--out": out,
    }
    args.update(overrides)
    return ["convert", str(model), "--quiet", *[str(item) for pair in args.items() for item in pair]]


def make_case(case: str, tmp_path: Path, tiny_model_file: Path, photos) -> tuple[list[str], str]:
    """Arguments of a failing conversion and a phrase its error must contain."""
    out = tmp_path / "out"
    model = tiny_model_file
    if case == "corrupt model":
        model = tmp_path / "broken.keras"
        model.write_bytes(tiny_model_file.read_bytes()[:5000])
        return convert_args(model, photos, out), "corrupt or truncated"
    if case == "not a model":
        model = tmp_path / "photo.keras"
        model.write_bytes(Path(photos.eval_items[0][0]).read_bytes())
        return convert_args(model, photos, out), "not a valid .keras"
    if case == "text file as model":
        model = tmp_path / "notes.txt"
        model.write_text("hello")
        return convert_args(model, photos, out), "not a Keras model"
    if case == "empty calibration":
        empty = tmp_path / "empty"
        empty.mkdir()
        return convert_args(model, photos, out, **{"--calibration": empty}), "no image files"
    if case == "image-less calibration":
        folder = tmp_path / "docs" / "Banana"
        folder.mkdir(parents=True)
        for i in range(150):
            (folder / f"note{i}.jpg").write_text("not an image")
        return convert_args(model, photos, out, **{"--calibration": folder.parent}), "0 usable images (150 unreadable"
    if case == "unknown profile":
        return convert_args(model, photos, out, **{"--profile": "raspberry-pi-9"}), "unknown profile 'raspberry-pi-9'"
    if case == "invalid profile":
        bad = tmp_path / "bad.toml"
        bad.write_text('backend = "tflite"\ndescription = "x"\nthreads = "four"\n')
        return convert_args(model, photos, out, **{"--profile": bad}), "'threads' must be an integer"
    if case == "labels count":
        labels = tmp_path / "labels.txt"
        labels.write_text("Banana\nSatsumas\nWatermelon\n")
        return convert_args(model, photos, out, **{"--labels": labels}), "3 labels for a model with 4 outputs"
    raise AssertionError(case)


CASES = [
    "corrupt model",
    "not a model",
    "text file as model",
    "empty calibration",
    "image-less calibration",
    "unknown profile",
    "invalid profile",
    "labels count",
]


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_error_and_no_output(case, tmp_path, tiny_model_file, photos, capfd):
    argv, phrase = make_case(case, tmp_path, tiny_model_file, photos)
    code, err = run_cli(capfd, *argv)
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert phrase in err[0]
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".tillsight-staging-*"))


@pytest.mark.integration
def test_console_script_exit_code_and_single_line(tmp_path, tiny_model_file, photos):
    argv, phrase = make_case("corrupt model", tmp_path, tiny_model_file, photos)
    result = subprocess.run([sys.executable, "-m", "tillsight", *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert phrase in result.stderr


def test_usage_error_exits_2(capfd):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", "model.keras"])
    assert exit_info.value.code == 2


@pytest.mark.integration
@requires_keras
def test_lambda_layer_is_refused_unless_unsafe_load(tmp_path, photos, capfd):
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x)).save(tmp_path / "lambda.keras")
    code, err = run_cli(capfd, *convert_args(tmp_path / "lambda.keras", photos, tmp_path / "out"))
    assert code == 1 and "Lambda layer" in err[0] and "--unsafe-load" in err[0]
    code, _ = run_cli(capfd, *convert_args(tmp_path / "lambda.keras", photos, tmp_path / "out"), "--unsafe-load")
    assert code == 0 and (tmp_path / "out" / "raspberry-pi-4" / "model.tflite").is_file()


@pytest.mark.integration
def test_accuracy_gate_keeps_the_good_bundle(tmp_path, tiny_model_file, photos, bundle_dir, capfd):
    """Calibrating on black frames wrecks int8 ranges: the gate refuses, the old bundle stays."""
    out = tmp_path / "out"
    good = out / "raspberry-pi-4"
    good.parent.mkdir()
    import shutil

    shutil.copytree(bundle_dir, good)
    before = {p.name: sha256_of_file(p) for p in good.iterdir()}
    black = tmp_path / "black" / "Banana"
    black.mkdir(parents=True)
    for i in range(120):
        cv2.imwrite(str(black / f"black{i}.png"), np.zeros((64, 64, 3), np.uint8))
    argv = convert_args(tiny_model_file, photos, out, **{"--calibration": black.parent})
    code, err = run_cli(capfd, *argv, "--eval", photos.eval_list)
    assert code == 1 and "lost" in err[0] and "no bundle written" in err[0], err
    assert "calibration images" in err[0] and "pruning" not in err[0], err  # the int8 step lost the points
    assert {p.name: sha256_of_file(p) for p in good.iterdir()} == before
    tillsight.load(good).close()

    code, _ = run_cli(capfd, *argv, "--eval", photos.eval_list, "--allow-accuracy-drop")
    assert code == 0
    accuracy = json.loads((good / "manifest.json").read_text())["metrics"]["accuracy"]
    assert accuracy["within_tolerance"] is False and accuracy["top1_drop"] > 1.0


@pytest.mark.integration
def test_accuracy_refusal_names_pruning_when_pruning_lost_the_points(tmp_path, tiny_model_file, photos, capfd):
    from tests.converters.test_pruning import _write_profile

    # the least-squares refit keeps the tiny model whole down to 8 channels a layer: cut every layer to one
    profile = _write_profile(tmp_path, photos, 'mode = "channels"\ntarget = 0.97\nchannel_multiple = 1\nscope = "layer"')
    argv = convert_args(tiny_model_file, photos, tmp_path / "out", **{"--profile": profile, "--finetune-epochs": 0})
    code, err = run_cli(capfd, *argv, "--eval", photos.eval_list)
    assert code == 1 and "no bundle written" in err[0], err
    assert "pruning alone took" in err[0] and "--finetune-epochs" in err[0] and "calibration" not in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_a_write_failure_while_converting_is_one_line_and_keeps_the_good_bundle(
    tmp_path, tiny_model_file, photos, bundle_dir, capfd, monkeypatch
):
    """A full disk during the SavedModel export printed TensorFlow's raw OutOfRangeError."""
    import shutil

    import tensorflow as tf

    from tillsight.converters.source import SourceModel

    out = tmp_path / "out"
    good = out / "raspberry-pi-4"
    shutil.copytree(bundle_dir, good)
    before = {p.name: sha256_of_file(p) for p in good.iterdir()}

    def full_disk(self, *args, **kwargs):
        raise tf.errors.OutOfRangeError(None, None, "Write failed: No space left on device")

    monkeypatch.setattr(SourceModel, "export_saved_model", full_disk)
    code, err = run_cli(capfd, *convert_args(tiny_model_file, photos, out))
    assert code == 1 and len(err) == 1, err
    assert f"writing the bundle for {good} failed (Write failed: No space left on device)" in err[0]
    assert "previous bundle there, if any, is untouched" in err[0] and "OutOfRangeError" not in err[0]
    assert {p.name: sha256_of_file(p) for p in good.iterdir()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".tillsight-staging")]


@pytest.mark.integration
def test_missing_evaluation_photos_are_said_on_screen_with_the_count(tmp_path, tiny_model_file, photos, capfd, caplog):
    """Half of --eval missing: the check passed on the rest and nothing on screen said so."""
    lines = photos.eval_list.read_text().splitlines()
    broken = tmp_path / "eval.txt"
    broken.write_text("".join(f"{tmp_path / 'gone' / f'{i}.jpg'}, 0\n" if i % 2 else line + "\n" for i, line in enumerate(lines)))
    missing = len(lines) // 2
    code, err = run_cli(
        capfd, *convert_args(tiny_model_file, photos, tmp_path / "out"), "--eval", broken, "--allow-accuracy-drop"
    )
    assert code == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "evaluation photos" in r.getMessage()]
    assert (
        len(said) == 1
        and f"{missing} of {len(lines)} evaluation photos" in said[0]
        and str(tmp_path / "gone" / "1.jpg") in said[0]
    )


@pytest.mark.integration
def test_a_conversion_shows_each_step_with_its_time_and_the_calibration_bar_once(tmp_path, tiny_model_file, photos):
    """Loading TensorFlow, converting and the compensated rounding showed nothing; the calibration 100% printed twice."""
    argv = [a for a in convert_args(tiny_model_file, photos, tmp_path / "out") if a != "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "tillsight", *argv[0:], "--eval", str(photos.eval_list)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for step in ("load TensorFlow", "load model", "calibration images", "convert for raspberry-pi-4 (tflite)"):
        assert any(line.startswith(f"{step}: ") and line.endswith(" s") for line in lines), (step, lines)
    finished = [
        line for line in done.stderr.replace("\r", "\n").splitlines() if line.startswith("calibration:") and "100%" in line
    ]
    assert len(finished) == 1, finished
