"""The baselines a user would otherwise reach for, measured on the same photos in the same run.

* the float Keras model's ``predict`` (batch of one),
* float TFLite (``TFLiteConverter.from_keras_model``, no optimizations),
* the plain full-int8 recipe users write by hand (``optimizations=[DEFAULT]``, a
  representative dataset of ~200 calibration images, int8 builtins, uint8 IO, all defaults),
* OpenVINO FP32 (``openvino.convert_model`` on the Keras model, CPU).

Each returns size, top-1, top-1 agreement with the float model and latency p50/p95.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tillsight._benchmark_worker import timed as timed_calls
from tillsight.bundle_metrics import latency_percentiles_ms, percent_equal


def percentiles_ms(times: list[float]) -> dict[str, float]:
    p50_ms, p95_ms = latency_percentiles_ms(times)
    return {"p50_ms": p50_ms, "p95_ms": p95_ms}


def timed(call, runs: int, warmup: int = 5) -> dict[str, float]:
    """p50/p95 of ``runs`` calls after ``warmup``, through the package's one timing loop."""
    return percentiles_ms(timed_calls(lambda _: call(), [None], runs, warmup))


def scores_summary(predicted: np.ndarray, truth: np.ndarray, float_top1: np.ndarray) -> dict[str, float]:
    return {
        "top1": percent_equal(predicted, truth),
        "agreement": percent_equal(predicted, float_top1),
    }


def keras_float(model, inputs: np.ndarray, truth: np.ndarray, runs: int) -> tuple[dict[str, Any], np.ndarray]:
    """The float model: its top-1 on every photo, and ``predict`` latency on one."""
    predicted = np.argmax(model.predict(inputs, batch_size=32, verbose=0), axis=1)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "model.keras"
        model.save(path)
        size = path.stat().st_size
    latency = timed(lambda: model.predict(inputs[:1], verbose=0), runs)
    return {"name": "Keras float (predict)", "bytes": size, **scores_summary(predicted, truth, predicted), **latency}, predicted


def _tflite_run(model_bytes: bytes, inputs: np.ndarray, threads: int, runs: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = source["quantization"]

    def prepared(x):
        if source["dtype"] == np.float32:
            return x[np.newaxis].astype(np.float32)
        info = np.iinfo(source["dtype"])
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(source["dtype"])[np.newaxis]

    predicted = []
    for x in inputs:
        interpreter.set_tensor(source["index"], prepared(x))
        interpreter.invoke()
        predicted.append(int(np.argmax(interpreter.get_tensor(target["index"]))))
    interpreter.set_tensor(source["index"], prepared(inputs[0]))
    return np.array(predicted), timed(interpreter.invoke, runs)


def tflite_float(model, inputs, truth, float_top1, threads: int, runs: int) -> dict[str, Any]:
    import tensorflow as tf

    model_bytes = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    predicted, latency = _tflite_run(model_bytes, inputs, threads, runs)
    return {"name": "TFLite float", "bytes": len(model_bytes), **scores_summary(predicted, truth, float_top1), **latency}


def tflite_plain_int8(model, inputs, truth, float_top1, calibration: np.ndarray, threads: int, runs: int) -> dict[str, Any]:
    """The hand-written full-int8 recipe with the converter's defaults."""
    import tensorflow as tf

    def representative_dataset():
        for x in calibration:
            yield [x[np.newaxis].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    model_bytes = converter.convert()
    predicted, latency = _tflite_run(model_bytes, inputs, threads, runs)
    return {
        "name": f"plain TFLiteConverter int8 ({len(calibration)} images)",
        "bytes": len(model_bytes),
        "model_bytes": model_bytes,
        **scores_summary(predicted, truth, float_top1),
        **latency,
    }


def openvino_fp32(model, inputs, truth, float_top1, threads: int, runs: int) -> dict[str, Any]:
    import openvino as ov

    from tillsight.converters.source import load_source_model

    core = ov.Core()
    # ov.convert_model(keras_model) refuses models with augmentation layers inside (random ops);
    # the inference-only SavedModel export is what a user would convert instead.
    size = int(inputs.shape[1])
    with tempfile.TemporaryDirectory() as work:
        saved = load_source_model(model).export_saved_model(size, size, False, Path(work) / "saved_model")
        converted = ov.convert_model(str(saved))
    with tempfile.TemporaryDirectory() as work:
        ov.save_model(converted, Path(work) / "model.xml", compress_to_fp16=False)
        size = sum(os.path.getsize(Path(work) / name) for name in ("model.xml", "model.bin"))
    compiled = core.compile_model(
        converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    )
    request = compiled.create_infer_request()
    predicted = np.array([int(np.argmax(request.infer([x[np.newaxis]])[0])) for x in inputs])
    latency = timed(lambda: request.infer([inputs[:1]]), runs)
    return {"name": "OpenVINO FP32 (CPU)", "bytes": size, **scores_summary(predicted, truth, float_top1), **latency}
