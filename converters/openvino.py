"""Target: OpenVINO IR for Intel iGPUs and CPUs, INT8 (NNCF) or FP16.

The Keras model goes through ``openvino.convert_model``; INT8 comes from ``nncf.quantize``
on the same calibration images, preprocessed by the same function as every other path
(or from ``nncf.quantize_with_accuracy_control`` when the profile asks for it); FP16 keeps
float activations with FP16 weights. Preprocessing is then built into the IR with
``PrePostProcessor``: the IR takes u8 NHWC BGR frames at the model's input size and does
the colour conversion, type conversion and normalisation itself, so the device only
crops and resizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from tillsight._native import native_stderr_to_log
from tillsight.bundle_metrics import percent_equal
from tillsight.datasets import iter_images
from tillsight.errors import BackendUnavailableError, ConversionError, summarize
from tillsight.preprocess import ColorOrder, InputSpec, preprocess
from tillsight.profiles import OpenVINOOptions, Precision, WeightRounding
from tillsight.runtimes.base import TensorSpec

from .job import ConversionJob, TargetResult
from .weight_rounding import NNCF_INT8, NNCF_INT8_OVERFLOW_FIX, RoundingReport, WeightGrid, compensated_weights

__all__ = ["MODEL_FILE", "WEIGHTS_FILE", "convert", "weight_grid"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"


def _import_openvino() -> tuple[Any, Any]:
    try:
        import nncf
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the OpenVINO target needs openvino and nncf ({exc.name} is missing); "
            "install them with: pip install 'tillsight[openvino-convert]'"
        ) from exc
    nncf.set_log_level(logging.ERROR)
    return openvino, nncf


def _quantized(nncf: Any, model: Any, job: ConversionJob) -> Any:
    """The IR quantized to int8 on the calibration images the profile's way; an FP16 or FP32 IR is returned unchanged."""
    options = job.profile.openvino
    if options.precision is not Precision.INT8:
        return model
    calibration = nncf.Dataset(list(job.calibration), lambda image: image[np.newaxis])
    if options.accuracy_control:
        return _quantize_with_accuracy_control(nncf, model, calibration, job)
    return nncf.quantize(
        model,
        calibration,
        subset_size=len(job.calibration),
        fast_bias_correction=False,
        advanced_parameters=_quantization_parameters(nncf, options.int8_weight_bits),
    )


def convert(job: ConversionJob) -> TargetResult:
    """Convert the source model to an OpenVINO IR in ``job.staging_dir``.

    Raises:
        ConversionError: Conversion or quantization failed.
        BackendUnavailableError: openvino or nncf is not installed.
    """
    ov, nncf = _import_openvino()
    spec = job.input_spec
    options = job.profile.openvino
    try:
        # NNCF draws progress bars on stdout; the CLI's stdout is for results.
        with (
            _weight_rounding(job) as rounding,
            job.saved_model() as saved_model,
            native_stderr_to_log("OpenVINO conversion"),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            model = _embed_preprocessing(ov, _quantized(nncf, ov.convert_model(str(saved_model)), job), spec)
            ov.save_model(model, str(job.staging_dir / MODEL_FILE), compress_to_fp16=options.precision is Precision.FP16)
    except (ConversionError, BackendUnavailableError):
        raise
    except Exception as exc:  # OpenVINO and NNCF raise many types
        raise ConversionError(f"OpenVINO {options.precision.value} conversion failed: {summarize(exc)}") from exc
    output = model.outputs[0]
    return TargetResult(
        files=(MODEL_FILE, WEIGHTS_FILE),
        # What the IR takes: u8 BGR pixels at the model size; the rest happens inside it.
        input_spec=dataclasses.replace(
            spec, color_order=ColorOrder.BGR, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dtype="uint8", scale=1.0, zero_point=0
        ),
        output_tensor=TensorSpec(tuple(output.get_partial_shape().to_shape()), "float32"),
        quantization={
            "scheme": "nncf-int8" if options.precision is Precision.INT8 else "fp16-weights",
            "precision": options.precision.value,
            "accuracy_control": options.precision is Precision.INT8 and options.accuracy_control,
            "weight_bits": options.int8_weight_bits if options.precision is Precision.INT8 else 16,
            "weight_rounding": rounding.to_dict() if rounding else {"method": "nearest"},
            "embedded_preprocessing": {
                "input": "u8 NHWC BGR",
                "color_order": spec.color_order.value,
                "mean": list(spec.mean),
                "std": list(spec.std),
            },
            "converter": f"openvino {ov.__version__}, nncf {nncf.__version__}",
        },
        runtime_options={
            "device_fallbacks": list(options.device_fallbacks),
            "performance_hint": options.performance_hint.value,
            # A float IR on a CPU computes in f32: the plugin's default is bfloat16 on recent Xeons, which
            # lost 1.60 points on a good model whose f32 result matched float exactly (the iGPU runs f16).
            **({"cpu_inference_precision": "f32"} if options.precision is not Precision.INT8 else {}),
            # 8-bit weights saturate a CPU's int8 dot products without VNNI: there the runtime computes in f32.
            **({"cpu_needs_vnni": True} if _needs_vnni(options) else {}),
        },
    )


@contextlib.contextmanager
def _weight_rounding(job: ConversionJob) -> Iterator[RoundingReport | None]:
    """INT8 from a Keras source: weights rounded with compensation onto the grid NNCF will store them on.

    NNCF rounds each weight to the nearest point of its grid; the compensated rounding of
    :mod:`.weight_rounding` chooses those points on the calibration images instead, each channel's
    largest weight kept so NNCF finds the same scale, and NNCF's own rounding then keeps them.
    """
    model = job.source.keras_model
    profile = job.profile
    if (
        profile.openvino.precision is not Precision.INT8
        or model is None
        or (profile.quantization.weight_rounding is not WeightRounding.COMPENSATED)
    ):
        yield None
        return
    with compensated_weights(model, job.calibration, True, weight_grid(profile.openvino.int8_weight_bits)) as report:
        yield report


def weight_grid(bits: int) -> WeightGrid:
    """The grid NNCF stores int8 weights on with the profile's weight bits (see :func:`_quantization_parameters`)."""
    return NNCF_INT8 if bits == 8 else NNCF_INT8_OVERFLOW_FIX


def _needs_vnni(options: OpenVINOOptions) -> bool:
    """Whether the IR's weights run exactly in int8 only on CPUs with VNNI (and on the iGPU)."""
    return options.precision is Precision.INT8 and options.int8_weight_bits == 8


def _quantization_parameters(nncf: Any, weight_bits: int) -> Any:
    """NNCF's settings for the profile's int8 weight bits.

    CPUs without VNNI (AVX2-only kiosk CPUs, many conversion hosts) multiply u8 activations by
    s8 weights in pairs summed into saturating int16, and full-range weights overflow there.
    Measured on the pretrained EfficientNet-Lite0 sample (296 val photos, AMD EPYC host without
    VNNI): 74.3% agreement with the float model with NNCF's default (the fix in the first layer
    only), 97.0% with the fix in every layer (full bias correction both times).

    So 7 bits use NNCF's overflow fix in every layer: exact in int8 on every CPU. 8 bits turn it off: the
    iGPU (DP4A) and CPUs with VNNI (11th-generation Core and later, Xeons since Cascade Lake,
    AMD Zen 4) sum in 32 bits. Measured on the re-trained sample (81.76%, three calibration
    draws, Xeon host with VNNI): 98.99%, 98.31% and 98.31% agreement with float, against 97.97%,
    95.95% and 96.28% with 7 bits. The range estimator and the preset changed nothing measurable
    (74.0-76.7% before the fix; the mixed preset 97.64%, 96.28% and 96.28% with it).
    """
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    fix = nncf.OverflowFix.ENABLE if weight_bits == 7 else nncf.OverflowFix.DISABLE
    return AdvancedQuantizationParameters(overflow_fix=fix)


def _embed_preprocessing(ov: Any, model: Any, spec: InputSpec) -> Any:
    """Make the IR take u8 NHWC BGR and apply colour order and normalisation inside."""
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    if spec.color_order is ColorOrder.RGB:
        steps.convert_color(ColorFormat.RGB)
    if any(spec.mean):
        steps.mean(list(spec.mean))
    if any(s != 1.0 for s in spec.std):
        steps.scale(list(spec.std))
    return ppp.build()


def _quantize_with_accuracy_control(nncf: Any, model: Any, calibration: Any, job: ConversionJob) -> Any:
    """INT8 that keeps the profile's top-1 tolerance on the evaluation photos (NNCF reverts layers)."""
    if job.evaluation is None:
        raise ConversionError(f"profile '{job.profile.name}' asks for accuracy control: pass labeled evaluation data with --eval")
    items = [
        (preprocess(image, job.input_spec)[np.newaxis], item.label_index)
        for item, image in iter_images(job.evaluation.images, [])
    ]

    def top1(compiled: Any, data: Any) -> float:
        """The share of ``data`` the compiled model classifies right (NNCF compares fractions)."""
        pairs = [(int(np.argmax(compiled(image)[0])), label) for image, label in data]
        return percent_equal([p for p, _ in pairs], [label for _, label in pairs], 6) / 100.0

    return nncf.quantize_with_accuracy_control(
        model,
        calibration_dataset=calibration,
        validation_dataset=nncf.Dataset(items),
        validation_fn=top1,
        max_drop=job.profile.max_top1_drop / 100.0,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(job.calibration),
        advanced_quantization_parameters=_quantization_parameters(nncf, job.profile.openvino.int8_weight_bits),
    )
