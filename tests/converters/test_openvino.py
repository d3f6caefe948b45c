"""OpenVINO target: INT8 and FP16 IR with embedded preprocessing, run on the CPU plugin here."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import tillsight
from tillsight.preprocess import ColorOrder

from ..conftest import load_photos, one_photo_tolerance

pytestmark = pytest.mark.integration

ov = pytest.importorskip("openvino", reason="pip install 'tillsight[openvino-convert]'")


@pytest.fixture(scope="session")
def openvino_bundles(tiny_model_file, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("openvino")
    profiles = tmp_path_factory.mktemp("openvino_profiles")
    return {
        name: tillsight.convert(  # an FP16 IR quantizes nothing: no calibration photos
            tiny_model_file,
            one_photo_tolerance(name, profiles, photos),
            calibration=photos.train_list if name == "intel-nuc-iris-xe" else None,
            evaluation=photos.eval_list,
            labels=photos.labels_file,
            out=out,
        ).path
        for name in ("intel-nuc-iris-xe", "intel-celeron-uhd")
    }


def op_types(bundle_path) -> set[str]:
    return {op.get_type_name() for op in ov.Core().read_model(bundle_path / "model.xml").get_ops()}


def int8_weights(bundle_path) -> list[np.ndarray]:
    """The IR's stored int8 weight constants, as integers."""
    ops = ov.Core().read_model(bundle_path / "model.xml").get_ops()
    return [
        op.get_data().astype(np.int32) for op in ops if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    ]


def test_int8_ir_with_embedded_preprocessing(openvino_bundles):
    path = openvino_bundles["intel-nuc-iris-xe"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {"model.xml", "model.bin", "conformance.npz"}
    spec = manifest["input"]
    assert (spec["dtype"], spec["color_order"], spec["mean"], spec["std"], spec["scale"]) == (
        "uint8",
        "bgr",
        [0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        1.0,
    )
    embedded = manifest["quantization"]["embedded_preprocessing"]
    assert embedded["input"] == "u8 NHWC BGR" and embedded["color_order"] == "rgb"
    assert manifest["quantization"]["precision"] == "int8"
    # The profile's 8-bit weights: each layer's largest weight at 127 steps (TFLite's grid)
    assert manifest["quantization"]["weight_bits"] == 8 and manifest["runtime"]["options"]["cpu_needs_vnni"] is True
    weights = int8_weights(path)
    assert len(weights) >= 3 and [np.abs(w).max() for w in weights] == [127] * len(weights)
    assert manifest["runtime"]["options"]["device_fallbacks"] == ["CPU"]
    assert "FakeQuantize" in op_types(path)
    model = ov.Core().read_model(path / "model.xml")
    assert model.inputs[0].get_element_type() == ov.Type.u8
    assert list(model.inputs[0].get_partial_shape().to_shape()) == [1, spec["height"], spec["width"], 3]
    accuracy = manifest["metrics"]["accuracy"]
    assert accuracy["within_tolerance"] and accuracy["top1_drop"] <= accuracy["tolerance"]


def test_fp16_ir_keeps_float_activations(openvino_bundles, tiny_model_file, photos, tmp_path, capsys):
    path = openvino_bundles["intel-celeron-uhd"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["quantization"]["precision"] == "fp16"
    assert manifest["quantization"]["calibration_images"] == 0 and manifest["quantization"]["calibration_source"] is None
    from tillsight.cli import main  # from the CLI, with no photos at all: the outputs are told from noise

    assert main(["convert", str(tiny_model_file), "--profile", "intel-celeron-uhd", "--out", str(tmp_path), "--quiet"]) == 0
    assert "bundle:" in capsys.readouterr().out
    assert tillsight.read_bundle(tmp_path / "intel-celeron-uhd").manifest.output.activation == "softmax"
    assert "FakeQuantize" not in op_types(path)
    constants = [op for op in ov.Core().read_model(path / "model.xml").get_ops() if op.get_type_name() == "Constant"]
    assert any(op.get_output_element_type(0) == ov.Type.f16 for op in constants)
    assert manifest["metrics"]["accuracy"]["top1_agreement"] >= 98.0
    # measured at f32 on this CPU, not at the plugin's default (bfloat16 on recent Xeons)
    assert manifest["runtime"]["options"]["cpu_inference_precision"] == "f32"
    with tillsight.load(path) as classifier:
        assert classifier.backend._compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    with tillsight.load(openvino_bundles["intel-nuc-iris-xe"]) as int8:  # an INT8 IR keeps the plugin's choice
        assert "cpu_inference_precision" not in int8.bundle.manifest.runtime.options


def test_both_backends_agree_on_real_photos(openvino_bundles, bundle_dir, photos):
    """Same source model, TFLite (raspberry-pi-4) and OpenVINO INT8 (CPU plugin here)."""
    items = [(p, i) for p, i in (tuple(line.split(",")) for line in photos.train_list.read_text().splitlines())]
    items = [(p.strip(), int(i)) for p, i in items] + list(photos.eval_items)
    _, _, frames = load_photos(items)
    with tillsight.load(bundle_dir) as tflite, tillsight.load(openvino_bundles["intel-nuc-iris-xe"]) as openvino:
        assert openvino.engine == "openvino on CPU" and openvino.input_spec.color_order is ColorOrder.BGR
        tflite_top1 = np.array([tflite.classify(f, top_k=1)[0].index for f in frames])
        openvino_top1 = np.array([openvino.classify(f, top_k=1)[0].index for f in frames])
    agreement = float(np.mean(tflite_top1 == openvino_top1))
    assert agreement >= 0.98, f"TFLite and OpenVINO agree on only {agreement:.1%} of {len(frames)} photos"


def test_openvino_runtime_never_imports_tensorflow(openvino_bundles, photos):
    script = f"""
import sys, tillsight
from pathlib import Path
from tillsight.datasets import read_image
with tillsight.load({str(openvino_bundles["intel-celeron-uhd"])!r}) as c:
    c.classify(read_image(Path({str(photos.eval_items[0][0])!r})))
print("tensorflow" in sys.modules, "nncf" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_accuracy_control_needs_evaluation_and_then_meets_the_tolerance(tiny_model_file, photos, tmp_path):
    text = one_photo_tolerance("intel-nuc-iris-xe", tmp_path, photos).read_text()
    profile = tmp_path / "nuc-accuracy.toml"
    text = text.replace("accuracy_control = false", "accuracy_control = true")
    profile.write_text(text.replace("int8_weight_bits = 8", "int8_weight_bits = 7"))
    with pytest.raises(tillsight.ConversionError, match="pass labeled evaluation data with --eval"):
        tillsight.convert(tiny_model_file, profile, calibration=photos.train_list, labels=photos.labels_file, out=tmp_path / "a")
    bundle = tillsight.convert(
        tiny_model_file,
        profile,
        calibration=photos.train_list,
        evaluation=photos.eval_list,
        labels=photos.labels_file,
        out=tmp_path / "b",
    )
    assert bundle.manifest.quantization["accuracy_control"] is True
    assert bundle.manifest.metrics.accuracy.top1_drop <= bundle.manifest.metrics.accuracy.tolerance
    # 7-bit weights in every layer (NNCF's overflow fix): exact in int8 on CPUs without VNNI too
    weights = int8_weights(bundle.path)
    assert bundle.manifest.quantization["weight_bits"] == 7 and "cpu_needs_vnni" not in bundle.manifest.runtime.options
    assert len(weights) >= 3 and all(np.abs(w).max() <= 64 for w in weights)


@pytest.mark.parametrize("bits", [7, 8])
def test_nncf_stores_exactly_the_weights_rounded_for_its_grid(bits, photos, tmp_path):
    """The compensated rounding is only kept if NNCF's grid is the one it rounds onto: per output channel of the
    BatchNorm-folded kernel, step max|w| / 63.5 with 7 bits (the overflow fix), max|w| / 127 with 8. Read NNCF's
    integers back and compare."""
    import nncf

    from tests.conftest import build_tiny_classifier
    from tillsight.converters.openvino import _quantization_parameters, weight_grid
    from tillsight.converters.weight_rounding import compensated_weights

    model = build_tiny_classifier()
    inputs, _, _ = load_photos(photos.eval_items)
    conv = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")
    bn = conv._outbound_nodes[0].operation
    fold = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    from tillsight.converters.source import load_source_model

    with compensated_weights(model, inputs, True, weight_grid(bits)):
        chosen = conv.kernel.numpy() * fold  # the folded kernel the IR computes with, HWIO
        saved = load_source_model(model).export_saved_model(64, 64, False, tmp_path / "saved")  # as the target exports
    ir = nncf.quantize(
        ov.convert_model(str(saved)),
        nncf.Dataset([x[np.newaxis] for x in inputs]),
        subset_size=len(inputs),
        advanced_parameters=_quantization_parameters(nncf, bits),
    )
    stored = []
    for op in ir.get_ordered_ops():
        a = op.input_value(0).get_node() if op.get_type_name() == "Multiply" else None
        if a is not None and a.get_type_name() == "Convert" and a.input_value(0).get_node().get_type_name() == "Constant":
            stored.append(a.input_value(0).get_node().get_data().astype(np.float64) * op.input_value(1).get_node().get_data())
    first = stored[0].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    assert first.shape == chosen.shape
    scale = np.median(first[chosen != 0] / chosen[chosen != 0])  # OpenVINO folds the Rescaling(1/255) in front too
    assert scale == pytest.approx(1 / 255, rel=1e-3)
    moved = ~np.isclose(first, chosen * scale, rtol=0, atol=1e-6 * np.abs(first).max())
    # NNCF keeps every chosen weight; with 7 bits but each channel's largest, at 63.5 steps between two integers
    per_channel = moved.reshape(-1, first.shape[-1]).sum(axis=0)
    assert per_channel.max() <= (1 if bits == 7 else 0), per_channel
    assert np.abs(chosen - conv.kernel.numpy() * fold).max() > 0, "rounding changed nothing: the comparison proves nothing"
