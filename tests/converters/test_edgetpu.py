"""Coral Edge TPU target: preflight on real architectures, compiler step, CPU fallback."""

from __future__ import annotations

import json
import stat
import textwrap

import numpy as np
import pytest

import tillsight
from tillsight import cli
from tillsight.converters.edgetpu_compiler import parse_compiler_log
from tillsight.converters.edgetpu_preflight import check

from ..conftest import SIZE, load_photos, requires_keras

# The console output of `edgetpu_compiler -s`, in the format Coral documents.
COMPILER_LOG = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: model.tflite
Input size: 1.05MiB
Output model: model_edgetpu.tflite
Output size: 1.21MiB
On-chip memory used for caching model parameters: 1.10MiB
On-chip memory remaining for caching model parameters: 6.85MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 7
Operation log: model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 6
Number of operations that will run on CPU: 1

Operator                       Count      Status

CONV_2D                        3          Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
QUANTIZE                       1          Mapped to Edge TPU
SOFTMAX                        1          Operation is otherwise supported, but not mapped due to some unspecified limitation
"""


def model_with(keras, activation: str | None = None, mobilenet: bool = False):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    if mobilenet:
        x = keras.applications.MobileNetV2(
            input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
        )(x)
    else:
        x = keras.layers.Conv2D(8, 3)(x)
        x = keras.layers.Activation(activation)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


@pytest.fixture(scope="module")
def coral_bundle(photos, tmp_path_factory):
    import keras

    out = tmp_path_factory.mktemp("coral")
    return tillsight.convert(
        model_with(keras, mobilenet=True), "coral-usb", calibration=photos.train_list, labels=photos.labels_file, out=out
    ).path


@pytest.mark.integration
def test_mobilenetv2_maps_fully_and_runs_on_cpu_fallback(coral_bundle, photos, capsys):
    manifest = json.loads((coral_bundle / "manifest.json").read_text())
    report = manifest["target_report"]["edgetpu_preflight"]
    from tillsight import cli

    assert cli.main(["inspect", str(coral_bundle)]) == 0  # inspect shows what the manifest holds
    shown = capsys.readouterr().out
    assert f"Edge TPU preflight: {report['summary']}" in shown and "Edge TPU compiler: not-compiled; next: run" in shown
    assert report["fully_mapped"] and report["first_unmapped"] is None
    assert report["ops_on_tpu"] == report["ops_total"] and report["mac_share_on_tpu"] == 1.0
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"} <= {op["op"] for op in report["ops"]}
    assert 0 < report["parameter_bytes"] < report["cache_bytes"]
    assert manifest["target_report"]["edgetpu_compiler"]["status"] == "not-compiled"
    assert "tillsight compile-edgetpu" in manifest["target_report"]["edgetpu_compiler"]["next_step"]
    assert manifest["runtime"]["options"] == {"edgetpu_model": None} and manifest["runtime"]["device"] == "usb"
    _, _, frames = load_photos(photos.eval_items[:3])
    with tillsight.load(coral_bundle) as classifier:
        assert classifier.engine.endswith("(CPU fallback)")
        assert "compile-edgetpu" in classifier.backend.fallback_reason
        assert classifier.classify(frames[0], top_k=1)[0].label in photos.labels


@pytest.mark.integration
def test_a_fallback_while_converting_names_the_bundle_folder_not_the_staging_one(coral_bundle, tmp_path):
    import shutil

    from tillsight.staging import staged_directory

    final = tmp_path / "coral-usb"
    with staged_directory(final) as staging:  # as convert measures the bundle before publishing it
        shutil.copytree(coral_bundle, staging, dirs_exist_ok=True)
        with tillsight.load(staging) as classifier:
            reason = classifier.backend.fallback_reason
    assert f"compile-edgetpu {final}'" in reason and ".tillsight-staging" not in reason
    with tillsight.load(final) as classifier:
        assert f"compile-edgetpu {final}'" in classifier.backend.fallback_reason


@pytest.mark.integration
@requires_keras
def test_unsupported_op_is_named_and_a_strict_profile_refuses_it(photos, tmp_path, capfd):
    import keras

    model = model_with(keras, activation="gelu")
    bundle = tillsight.convert(model, "coral-usb", calibration=photos.train_list, labels=photos.labels_file, out=tmp_path)
    first = bundle.manifest.target_report["edgetpu_preflight"]["first_unmapped"]
    assert first["op"] == "GELU" and "not an Edge TPU op" in first["reason"]
    assert cli.main(["edgetpu-check", str(bundle.path)]) == 0
    out = capfd.readouterr().out
    assert "GELU cannot map" in out and "CPU (cannot map: GELU is not an Edge TPU op)" in out
    with pytest.raises(tillsight.ConversionError, match=r"op \d+ GELU cannot map .*require_full_mapping"):
        tillsight.convert(
            model, "coral-devboard", calibration=photos.train_list, labels=photos.labels_file, out=tmp_path / "strict"
        )
    assert not (tmp_path / "strict").exists()


def plain_int8_tflite(keras_model, path):
    """The converter's default recipe: int8 inside, float32 in and out."""
    import tensorflow as tf

    def representative():
        for _ in range(4):
            yield [np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    path.write_bytes(converter.convert())
    return path


@pytest.mark.integration
@requires_keras
def test_float_io_is_flagged_at_the_first_op(tmp_path):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    static = keras.Model(inputs, model_with(keras, activation="relu")(inputs))
    report = check(plain_int8_tflite(static, tmp_path / "float_io.tflite"))
    first = report.first_unmapped
    assert (first.index, first.op) == (0, "QUANTIZE") and "float32, not int8/uint8" in first.reason
    assert report.ops_on_tpu == 0 and report.ops[-1].op == "DEQUANTIZE" and not report.ops[-1].maps


@pytest.mark.integration
@requires_keras
def test_dynamic_batch_is_flagged(tmp_path):
    import keras

    report = check(plain_int8_tflite(model_with(keras, activation="relu"), tmp_path / "dynamic.tflite"))
    assert "dynamic shape" in report.first_unmapped.reason
    assert not any(verdict.maps for verdict in report.ops)


def test_compiler_log_parsing():
    report = parse_compiler_log(COMPILER_LOG)
    assert report["compiler_version"] == "16.0.384591198" and report["compiled"]
    assert report["on_chip_bytes"] == round(1.10 * 1024**2) and report["off_chip_bytes"] == 0
    assert report["on_chip_remaining_bytes"] == round(6.85 * 1024**2)
    assert (report["subgraphs"], report["ops_total"], report["ops_on_tpu"], report["ops_on_cpu"]) == (1, 7, 6, 1)
    assert [(row["op"], row["count"], row["mapped"]) for row in report["operators"]] == [
        ("CONV_2D", 3, True),
        ("MEAN", 1, True),
        ("FULLY_CONNECTED", 1, True),
        ("QUANTIZE", 1, True),
        ("SOFTMAX", 1, False),
    ]


@pytest.mark.integration
def test_compile_bundle_then_delegate_missing_falls_back_or_fails_clearly(coral_bundle, tmp_path, monkeypatch, capfd):
    """A stand-in for edgetpu_compiler (same arguments, same outputs) exercises the real compile path."""
    import shutil

    bundle = shutil.copytree(coral_bundle, tmp_path / "coral-usb")
    fake = tmp_path / "bin" / "edgetpu_compiler"
    fake.parent.mkdir()
    fake.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        # usage: edgetpu_compiler -s -o OUT MODEL
        out="$3"; model="$4"; name=$(basename "$model" .tflite)
        cp "$model" "$out/${{name}}_edgetpu.tflite"
        cat <<'LOG'
        {textwrap.indent(COMPILER_LOG, "        ").strip()}
        LOG
        """)
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{__import__('os').environ['PATH']}")
    assert cli.main(["compile-edgetpu", str(bundle)]) == 0
    assert "6/7 ops on the Edge TPU, 1 subgraph(s)" in capfd.readouterr().out
    compiled = tillsight.read_bundle(bundle)  # verifies the new artifact's sha256
    assert compiled.manifest.runtime.options["edgetpu_model"] == "model_edgetpu.tflite"
    assert compiled.manifest.target_report["edgetpu_compiler"]["status"] == "compiled"

    with tillsight.load(bundle) as classifier:  # libedgetpu is not installed on these machines
        assert classifier.engine.endswith("(CPU fallback)")
        assert "libedgetpu.so.1 is not installed" in classifier.backend.fallback_reason
        assert "plug in the Coral device" in classifier.backend.fallback_reason
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["runtime"]["backend_fallbacks"] = []
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(tillsight.BackendUnavailableError, match="libedgetpu.so.1 is not installed.*libedgetpu1-std"):
        tillsight.load(bundle)


@pytest.mark.integration
def test_compile_without_the_compiler_leaves_the_bundle_alone(coral_bundle, monkeypatch, capfd):
    monkeypatch.setenv("PATH", "/nonexistent")
    before = (coral_bundle / "manifest.json").read_bytes()
    assert cli.main(["compile-edgetpu", str(coral_bundle)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edgetpu_compiler is not installed" in err[0]
    assert (coral_bundle / "manifest.json").read_bytes() == before


def test_the_compiler_runs_without_a_shell_and_is_stopped_by_its_timeout(tmp_path, monkeypatch):
    import time

    from tillsight.converters.edgetpu_compiler import compile_model
    from tillsight.errors import ConversionError

    monkeypatch.chdir(tmp_path)  # where a shell would run the injected command
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not compiled anyway")
    hanging = tmp_path / "edgetpu_compiler"
    hanging.write_text("#!/bin/sh\nsleep 30\n")
    hanging.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(ConversionError, match="could not run.*timed out"):
        compile_model(model, tmp_path, compiler=str(hanging), timeout_s=1)
    assert time.monotonic() - started < 10
    # A model path full of shell syntax reaches the compiler as one argument, never a shell.
    echo = tmp_path / "echo_compiler"
    echo.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args"\nexit 3\n')
    echo.chmod(0o755)
    nasty = tmp_path / "m; touch injected; $(touch injected) `touch injected`.tflite"
    nasty.write_bytes(b"x")
    with pytest.raises(ConversionError, match="failed"):
        compile_model(nasty, tmp_path, compiler=str(echo))
    assert not (tmp_path / "injected").exists()
    assert (tmp_path / "args").read_text().splitlines()[-1] == str(nasty)


def test_compiling_a_bundle_of_another_backend_says_which_backend_in_one_line(tmp_path, capsys):
    import shutil

    from tillsight import cli
    from tillsight.demo import ASSETS

    bundle = shutil.copytree(ASSETS / "classifier", tmp_path / "cpu-bundle")
    assert cli.main(["compile-edgetpu", str(bundle)]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f"error: {bundle} is a bundle for the tflite backend; compile only Edge TPU bundles"
