"""Convert -> load -> classify real photos -> compare with the Keras model."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import tillsight
from tillsight.bundle import sha256_of_file

from ..conftest import SIZE, build_tiny_classifier, load_photos, requires_keras, train

pytestmark = [pytest.mark.integration, requires_keras]


def keras_top1(model, inputs: np.ndarray) -> np.ndarray:
    return np.argmax(model.predict(inputs, verbose=0), axis=-1)


def bundle_top1(bundle_path: Path, frames) -> np.ndarray:
    with tillsight.load(bundle_path) as classifier:
        return np.array([classifier.classify(frame, top_k=1)[0].index for frame in frames])


def test_round_trip_agrees_with_keras_on_held_out_photos(bundle_dir, tiny_model, photos):
    inputs, truth, frames = load_photos(photos.eval_items)
    expected = keras_top1(tiny_model, inputs)
    assert len(set(expected.tolist())) == 4, "the trained model should tell the four products apart"
    got = bundle_top1(bundle_dir, frames)
    agreement = float(np.mean(expected == got))
    assert agreement >= 0.95, f"top-1 agreement with Keras only {agreement:.1%}"
    keras_accuracy, int8_accuracy = float(np.mean(expected == truth)), float(np.mean(got == truth))
    assert keras_accuracy >= 0.5, "the model should be well above chance (25%)"
    assert keras_accuracy - int8_accuracy <= 1 / len(truth) + 1e-9  # at most one photo


def test_manifest_records_what_the_device_and_the_user_need(bundle_dir, tiny_model_file, photos):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["sdk_version"] == tillsight.__version__
    assert manifest["profile_name"] == "raspberry-pi-4" and bundle_dir.name == "raspberry-pi-4"
    assert manifest["source_model"]["sha256"] == sha256_of_file(tiny_model_file)
    assert manifest["labels"] == list(photos.labels)
    spec = manifest["input"]
    assert (spec["height"], spec["width"], spec["dtype"], spec["color_order"]) == (SIZE, SIZE, "uint8", "rgb")
    assert spec["resize"] == "center-crop" and spec["scale"] > 0
    assert manifest["runtime"] == {
        "backend": "tflite",
        "model_file": "model.tflite",
        "threads": 4,
        "backend_fallbacks": [],
        "device": "",
        "options": {},
    }
    assert manifest["quantization"]["per_channel"] is True
    assert manifest["quantization"]["calibration_images"] == len(photos.train_list.read_text().splitlines())
    artifact = manifest["artifacts"]["model.tflite"]
    assert artifact["sha256"] == sha256_of_file(bundle_dir / "model.tflite")
    accuracy = manifest["metrics"]["accuracy"]
    assert accuracy["images"] == len(photos.eval_items)
    assert accuracy["within_tolerance"] is True and accuracy["top1_drop"] <= accuracy["tolerance"]
    assert accuracy["top1_agreement"] >= 95.0
    assert manifest["metrics"]["latency_host"]["p50_ms"] > 0


def test_model_is_full_integer_with_uint8_io(bundle_dir):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(bundle_dir / "model.tflite"))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    dtypes = {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    assert dtypes <= {"uint8", "int8", "int32"}, dtypes
    conv_weights = [
        d
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.int8 and len(d["shape"]) == 4 and len(d["quantization_parameters"]["scales"]) > 1
    ]
    assert conv_weights, "per-channel int8 conv weights expected"


@pytest.mark.parametrize("form", ["h5", "saved_model", "folder_data"])
def test_other_model_forms_and_class_folder_data(form, tiny_model, photos, tmp_path):
    model_path = tmp_path / "model.h5"
    calibration = photos.train_list
    if form == "h5":
        tiny_model.save(model_path)
    elif form == "saved_model":
        model_path = tmp_path / "saved"
        without_augmentation(tiny_model).export(model_path, format="tf_saved_model", verbose=False)
    else:
        model_path = tiny_model
        calibration = photos.train_folder
    bundle = tillsight.convert(
        model_path, "generic-x86-cpu", calibration=calibration, labels=photos.labels_file, out=tmp_path / "out"
    )
    inputs, _, frames = load_photos(photos.eval_items)
    agreement = float(np.mean(keras_top1(tiny_model, inputs) == bundle_top1(bundle.path, frames)))
    assert agreement >= 0.95
    assert bundle.manifest.source_model.format == {"h5": "h5", "saved_model": "saved_model", "folder_data": "in-memory"}[form]


def without_augmentation(model):
    """The same layers and weights minus the leading RandomFlip."""
    import keras

    inputs = keras.Input(model.input_shape[1:])
    x = inputs
    for layer in model.layers[2:]:
        x = layer(x)
    return keras.Model(inputs, x)


def test_saved_model_with_active_augmentation_is_refused_clearly(tiny_model, photos, tmp_path):
    """Keras 3's export keeps augmentation layers in training mode: say so, do not guess."""
    tiny_model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    with pytest.raises(tillsight.ModelLoadError, match="augmentation layers") as error:
        tillsight.convert(tmp_path / "saved", "generic-x86-cpu", calibration=photos.train_list, out=tmp_path / "out")
    assert "convert the .keras file instead" in str(error.value)
    assert not (tmp_path / "out").exists()


def write_profile(path: Path, **changes: str) -> Path:
    text = resources.files("tillsight.device_profiles").joinpath("generic-x86-cpu.toml").read_text()
    for old, new in changes.items():
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_logits_model_with_dynamic_size_and_int8_io(photos, tmp_path):
    model = train(build_tiny_classifier(size=None, logits=True), photos, epochs=15)
    profile = write_profile(
        tmp_path / "small-int8.toml",
        **{"size = [224, 224]": "size = [56, 56]", 'io_dtype = "uint8"': 'io_dtype = "int8"'},
    )
    bundle = tillsight.convert(model, profile, calibration=photos.train_list, labels=photos.labels_file, out=tmp_path)
    manifest = bundle.manifest
    assert (manifest.input.height, manifest.input.width, manifest.input.dtype) == (56, 56, "int8")
    assert manifest.output.activation == "softmax-added"
    inputs, _, frames = load_photos(photos.eval_items, size=56)
    expected = np.argmax(model.predict(inputs, verbose=0), axis=-1)
    with tillsight.load(bundle.path) as classifier:
        scores = np.stack([classifier.scores(frame) for frame in frames])
    assert np.allclose(scores.sum(axis=1), 1.0, atol=0.05), "dequantized softmax scores should sum to 1"
    assert float(np.mean(np.argmax(scores, axis=1) == expected)) >= 0.9


def test_mobilenetv2_with_preprocessing_inside_converts(transfer_model_file, photos, tmp_path):
    import keras

    model = keras.saving.load_model(transfer_model_file)  # RandomFlip and Rescaling inside, MobileNetV2 nested
    bundle = tillsight.convert(model, "raspberry-pi-4", calibration=photos.train_list, labels=photos.labels_file, out=tmp_path)
    model_inputs, _, frames = load_photos(photos.eval_items)
    expected = keras_top1(model, model_inputs)
    assert len(set(expected.tolist())) >= 2, "a float model stuck on one class would make agreement meaningless"
    agreement = float(np.mean(expected == bundle_top1(bundle.path, frames)))
    assert agreement >= 0.9, f"MobileNetV2 int8 agrees with Keras on only {agreement:.1%}"
    assert bundle.manifest.quantization["scheme"] == "full-integer"


def test_uint8_input_model_converts_with_the_same_predictions(tiny_model, photos, tmp_path):
    """keras.Input(dtype="uint8") puts a cast with no int8 kernel first; tillsight rebuilds the input."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = inputs
    for layer in tiny_model.layers[2:]:  # Rescaling onwards, the trained weights shared
        x = layer(x)
    model = keras.Model(inputs, x)
    bundle = tillsight.convert(model, "generic-x86-cpu", calibration=photos.train_list, labels=photos.labels_file, out=tmp_path)
    pixels, _, frames = load_photos(photos.eval_items)
    expected = np.argmax(model.predict(pixels.astype(np.uint8), verbose=0), axis=-1)
    assert float(np.mean(expected == bundle_top1(bundle.path, frames))) >= 0.95
