"""The device side: load a bundle and classify real photos, without TensorFlow."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tillsight
from tillsight.errors import BackendUnavailableError, BundleError, InferenceError, OptionsError
from tillsight.runtimes.tflite import import_interpreter

from ..conftest import load_photos


@pytest.mark.integration
def test_runtime_never_imports_tensorflow(bundle_dir, photos):
    script = f"""
import sys, json
import tillsight, tillsight.runtimes
from tillsight.datasets import read_image
with tillsight.load({str(bundle_dir)!r}) as classifier:
    top = classifier.classify(read_image(__import__('pathlib').Path({str(photos.eval_items[0][0])!r})), top_k=2)
print(json.dumps({{"tf": "tensorflow" in sys.modules, "engine": classifier.engine, "label": top[0].label}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tf"] is False
    assert report["engine"] == "ai_edge_litert.interpreter"
    assert report["label"] in photos.labels


@pytest.mark.integration
def test_classify_returns_sorted_dequantized_probabilities(bundle_dir, photos):
    _, _, frames = load_photos(photos.eval_items[:5])
    with tillsight.load(bundle_dir) as classifier:
        for frame in frames:
            predictions = classifier.classify(frame, top_k=4)
            scores = [p.score for p in predictions]
            assert scores == sorted(scores, reverse=True)
            assert abs(sum(scores) - 1.0) < 0.03  # all four classes: uint8 softmax steps of 1/256
            assert all(p.label == photos.labels[p.index] for p in predictions)
            assert classifier.classify(frame, top_k=1)[0] == predictions[0]


@pytest.mark.integration
def test_any_frame_size_grayscale_and_bgra(bundle_dir, photos):
    _, _, frames = load_photos(photos.eval_items[:1])
    frame = frames[0]
    with tillsight.load(bundle_dir) as classifier:
        side = min(frame.shape[:2])
        square = np.ascontiguousarray(frame[:side, :side])
        wide = np.zeros((side, 3 * side, 3), np.uint8)
        wide[:, side : 2 * side] = square  # center-crop must cut exactly the square back out
        assert classifier.classify(wide, top_k=4) == classifier.classify(square, top_k=4)
        assert len(classifier.classify(frame[:, :, 0], top_k=2)) == 2
        bgra = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
        assert classifier.classify(bgra, top_k=1)[0] == classifier.classify(frame, top_k=1)[0]
        with pytest.raises(InferenceError, match="uint8"):
            classifier.classify(frame.astype(np.float32))


@pytest.mark.integration
def test_safe_to_share_between_threads(bundle_dir, photos):
    _, _, frames = load_photos(photos.eval_items)
    with tillsight.load(bundle_dir) as classifier:
        sequential = [classifier.classify(frame, top_k=1)[0] for frame in frames]
        with ThreadPoolExecutor(max_workers=4) as pool:
            parallel = list(pool.map(lambda f: classifier.classify(f, top_k=1)[0], frames * 3))
    assert parallel == sequential * 3


@pytest.mark.integration
def test_closed_classifier_refuses_work(bundle_dir, photos):
    _, _, frames = load_photos(photos.eval_items[:1])
    classifier = tillsight.load(bundle_dir)
    classifier.close()
    with pytest.raises(InferenceError, match="closed"):
        classifier.classify(frames[0])


@pytest.mark.integration
def test_tampered_or_truncated_model_is_rejected_before_loading(bundle_dir, tmp_path):
    flipped = shutil.copytree(bundle_dir, tmp_path / "flipped")
    data = bytearray((flipped / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (flipped / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its manifest"):
        tillsight.load(flipped)
    truncated = shutil.copytree(bundle_dir, tmp_path / "truncated")
    (truncated / "model.tflite").write_bytes(data[:1000])
    with pytest.raises(BundleError, match="does not match its manifest"):
        tillsight.load(truncated)


@pytest.mark.integration
def test_manifest_cannot_point_outside_the_bundle(bundle_dir, tmp_path):
    escaped = shutil.copytree(bundle_dir, tmp_path / "escaped")
    manifest = json.loads((escaped / "manifest.json").read_text())
    manifest["artifacts"]["../model.tflite"] = manifest["artifacts"].pop("model.tflite")
    manifest["runtime"]["model_file"] = "../model.tflite"
    (escaped / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(escaped / "model.tflite", tmp_path / "model.tflite")
    with pytest.raises(BundleError, match="outside the bundle"):
        tillsight.load(escaped)


def test_interpreter_preference_and_missing_runtime_message():
    name, interpreter_class = import_interpreter(("no_such_litert.interpreter", "ai_edge_litert.interpreter"))
    assert name == "ai_edge_litert.interpreter" and interpreter_class.__name__ == "Interpreter"
    with pytest.raises(BackendUnavailableError, match=r"pip install 'tillsight\[tflite\]'"):
        import_interpreter(("no_such_litert.interpreter", "no_such_tflite_runtime.interpreter"))


@pytest.mark.integration
@pytest.mark.parametrize("cores", [8, 2])
def test_threads_come_from_the_profile_capped_at_the_cores_unless_overridden(bundle_dir, cores, monkeypatch, caplog):
    import tillsight.runtimes as runtimes

    monkeypatch.setattr(runtimes, "available_cores", lambda: cores)
    runtimes._say_capped.cache_clear()
    with caplog.at_level(logging.INFO, logger="tillsight.runtimes"):
        for _ in range(2):
            with tillsight.load(bundle_dir) as classifier:
                assert classifier.backend.threads == min(4, cores)  # raspberry-pi-4 asks for 4
    said = [r.getMessage() for r in caplog.records if "threads; this machine gives" in r.getMessage()]
    assert said == (
        [] if cores >= 4 else ["the profile asks for 4 threads; this machine gives the process 2 cores: running on 2"]
    )
    with caplog.at_level(logging.WARNING, logger="tillsight.runtimes"):
        with tillsight.load(bundle_dir, threads=5000) as classifier:  # asked for: capped too, with a warning
            assert classifier.backend.threads == cores
    assert any("5000 threads asked for" in r.getMessage() for r in caplog.records)
    with pytest.raises(OptionsError, match="threads must be at least 1, got -1"):
        tillsight.load(bundle_dir, threads=-1)


@pytest.mark.integration
def test_manifest_quantization_must_match_the_model(bundle_dir, tmp_path):
    """prepare() quantizes with the manifest's input spec, so it must agree with the model file."""
    for key, change in (("scale", lambda v: v * 2), ("zero_point", lambda v: v + 1)):
        edited = shutil.copytree(bundle_dir, tmp_path / key)
        manifest = json.loads((edited / "manifest.json").read_text())
        manifest["input"][key] = change(manifest["input"][key])
        (edited / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="convert the model again"):
            tillsight.load(edited)
