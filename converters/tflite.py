"""Target: full-integer TFLite for CPU backends (LiteRT with XNNPACK).

``tf.lite.TFLiteConverter`` quantizes weights (int8, per channel unless the profile says
otherwise; for a Keras source their rounding is chosen first by
:mod:`~tillsight.converters.weight_rounding`) and activations (int8), calibrated on the
representative images, with integer input and output tensors of the profile's IO type. The result is checked to be fully
integer: a float tensor left in the graph fails the conversion. The model then gets its TFLite Metadata (labels,
normalisation; :mod:`~tillsight.converters.tflite_metadata`) before the manifest hashes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tillsight._native import native_stderr_to_log
from tillsight.errors import ConversionError, summarize
from tillsight.profiles import IODtype, WeightRounding
from tillsight.runtimes.base import TensorSpec
from tillsight.runtimes.tflite import import_interpreter

from ._tf import tf
from .job import ConversionJob, TargetResult
from .tflite_metadata import add_metadata
from .weight_rounding import RoundingReport, compensated_weights

__all__ = ["MODEL_FILE", "convert"]

MODEL_FILE = "model.tflite"

logger = logging.getLogger(__name__)

_TF_IO_TYPES = {IODtype.UINT8: tf.uint8, IODtype.INT8: tf.int8}


def convert(job: ConversionJob) -> TargetResult:
    """Quantize the source model to full-integer TFLite in ``job.staging_dir``.

    Raises:
        ConversionError: The converter failed, or the model is not fully integer.
    """
    with _weight_rounding(job) as rounding, job.saved_model() as saved_model:
        flatbuffer = _quantize(job, saved_model)
    model_path = Path(job.staging_dir) / MODEL_FILE
    model_path.write_bytes(flatbuffer)
    input_tensor, output_tensor = _check_fully_integer(model_path)
    input_spec = dataclasses.replace(
        job.input_spec, dtype=input_tensor.dtype, scale=input_tensor.scale, zero_point=input_tensor.zero_point
    )
    with native_stderr_to_log("writing TFLite metadata"):  # before the manifest hashes the file
        metadata = add_metadata(
            model_path, job.labels, input_spec, f"Product classifier, full-integer for {job.profile.name} (tillsight)"
        )
    if metadata.note:
        logger.info(
            "TFLite metadata: readers such as MediaPipe's ImageClassifier see other input than tillsight: %s", metadata.note
        )
    return TargetResult(
        files=(MODEL_FILE,),
        input_spec=input_spec,
        output_tensor=output_tensor,
        quantization={
            "scheme": "full-integer",
            "weights": "int8",
            "activations": "int8",
            "per_channel": job.profile.quantization.per_channel,
            "weight_rounding": rounding.to_dict() if rounding else {"method": "nearest"},
            "io_dtype": job.profile.input.io_dtype.value,
            "converter": f"tensorflow {tf.__version__} TFLiteConverter",
        },
        report={"tflite_metadata": metadata.to_dict()},
    )


@contextlib.contextmanager
def _weight_rounding(job: ConversionJob) -> Iterator[RoundingReport | None]:
    """Compensated weight rounding on a Keras source while it is exported; None where it does not apply."""
    model = job.source.keras_model
    if job.profile.quantization.weight_rounding is not WeightRounding.COMPENSATED or model is None:
        yield None  # a SavedModel source has no layers to round: the converter's nearest rounding
        return
    with compensated_weights(model, job.calibration, job.profile.quantization.per_channel) as report:
        yield report


def _quantize(job: ConversionJob, saved_model: Path) -> bytes:
    """Run the TFLite converter's full-int8 recipe on the exported SavedModel."""
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    except Exception as exc:  # a SavedModel the converter cannot read
        raise ConversionError(f"TFLite converter cannot read the exported model: {summarize(exc)}") from exc
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = _TF_IO_TYPES[job.profile.input.io_dtype]
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    if not job.profile.quantization.per_channel:
        # No public switch exists; per-tensor weights suit accelerators without per-channel support.
        converter._experimental_disable_per_channel = True

    calibration = job.calibration

    def representative_images():
        for image in calibration:
            yield [image[np.newaxis]]

    converter.representative_dataset = representative_images
    try:
        with native_stderr_to_log("TFLite conversion"):
            flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ConversionError(f"TFLite full-int8 conversion failed: {summarize(exc, prefer_errors=True)}") from exc
    return flatbuffer


def _check_fully_integer(model_path: Path) -> tuple[TensorSpec, TensorSpec]:
    """Return the IO tensor specs, failing if any activation or weight stayed float."""
    _, interpreter_class = import_interpreter()
    with native_stderr_to_log("checking the TFLite model"):
        interpreter = interpreter_class(model_path=str(model_path))
        interpreter.allocate_tensors()
    float_tensors = [d["name"] for d in interpreter.get_tensor_details() if np.dtype(d["dtype"]) in (np.float32, np.float16)]
    if float_tensors:
        raise ConversionError(
            f"the converted model is not fully integer: tensor '{float_tensors[0]}' stayed float; "
            "an op in the model has no int8 kernel"
        )
    specs = []
    for details in (interpreter.get_input_details()[0], interpreter.get_output_details()[0]):
        scale, zero_point = details["quantization"]
        specs.append(
            TensorSpec(tuple(int(d) for d in details["shape"]), np.dtype(details["dtype"]).name, float(scale), int(zero_point))
        )
    return specs[0], specs[1]
