"""Conversion targets: one module per target, registered in one table.

Each target module has ``convert(job: ConversionJob) -> TargetResult``: it writes its model
file(s) into the job's staging directory. Loading the source model, calibration data,
evaluation, the manifest and the atomic bundle write are shared, in
:func:`tillsight.convert`. This package imports TensorFlow; the device side never imports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tillsight.errors import ConversionError
from tillsight.profiles import Backend

from .job import ConversionJob, TargetResult

__all__ = ["TARGETS", "ConversionJob", "TargetResult", "target_for"]

#: Profile backend -> module whose ``convert`` builds models for it.
TARGETS: dict[Backend, str] = {
    Backend.TFLITE: "tillsight.converters.tflite",
    Backend.OPENVINO: "tillsight.converters.openvino",
    Backend.EDGETPU: "tillsight.converters.edgetpu",
}


def target_for(backend: Backend) -> Callable[[ConversionJob], TargetResult]:
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
