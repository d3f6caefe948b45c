"""The converting side: a Keras classifier in, a verified bundle for one device profile out.

In the order a conversion runs (:func:`tillsight.convert` is :func:`.conversion.convert`):

* :mod:`.options`: :class:`ConversionOptions`, what the source model expects and what may be done.
* :mod:`.conversion`: the steps (check inputs, load, calibrate, compress, convert, measure, write);
  :mod:`.input_checks` checks the inputs before TensorFlow is imported.
* :mod:`.source`: the Keras model (or SavedModel) behind one ``predict``.
* :mod:`.compression`: the training steps before quantization, using :mod:`.pruning` and :mod:`.training`.
* the targets, one module per backend, registered in :data:`TARGETS`: :mod:`.tflite` (with
  :mod:`.weight_rounding`), :mod:`.openvino`, :mod:`.edgetpu` (with :mod:`.edgetpu_preflight` and
  :mod:`.edgetpu_compiler`). Each has ``convert(job: ConversionJob) -> TargetResult`` and writes its
  model file(s) into the job's staging directory.
* :mod:`.evaluate`: the written bundle, loaded as on the device, against the float model;
  :mod:`.bundle_record`: what the bundle records (manifest, accuracy against the tolerance, budgets).
* :mod:`.steps`: the context manager that times and logs each step.

Beside the conversion: :mod:`.distill` (:func:`tillsight.distill`, a smaller student from a
teacher) and :mod:`.backbones` (ImageNet-pretrained EfficientNet-Lite, read by
:mod:`.torch_checkpoint`).

What imports TensorFlow: this package's ``__init__``, :mod:`.options`, :mod:`.input_checks`, :mod:`.job`, :mod:`.steps`,
:mod:`.openvino` (OpenVINO and NNCF only, when it runs), :mod:`.edgetpu_preflight`,
:mod:`.edgetpu_compiler` and :mod:`.torch_checkpoint` do not; every other module does, directly or
through :mod:`._tf`. The device side imports none of those.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tillsight.errors import ConversionError
from tillsight.profiles import BackendKind

from .job import ConversionJob, TargetResult

__all__ = ["TARGETS", "ConversionJob", "TargetResult", "target_for"]

#: Profile backend -> module whose ``convert`` builds models for it.
TARGETS: dict[BackendKind, str] = {
    BackendKind.TFLITE: "tillsight.converters.tflite",
    BackendKind.OPENVINO: "tillsight.converters.openvino",
    BackendKind.EDGETPU: "tillsight.converters.edgetpu",
}


def target_for(backend: BackendKind) -> Callable[[ConversionJob], TargetResult]:
    """The conversion function for a profile's backend.

    Raises:
        ConversionError: This version has no converter for that backend.
    """
    if backend not in TARGETS:
        available = ", ".join(b.value for b in TARGETS)
        raise ConversionError(
            f"this tillsight version cannot convert for the '{backend.value}' backend yet "
            f"(available: {available}); pick a profile with one of those backends"
        )
    return importlib.import_module(TARGETS[backend]).convert
