"""Target: Coral Edge TPU.

The full-int8 TFLite model (batch 1, static shapes, the profile's uint8/int8 IO) from the
TFLite target, then the preflight report, then the compiler when it is installed. Without
the compiler the bundle still runs (the int8 model on the CPU, where the profile allows
it) and its manifest says how to compile it.
"""

from __future__ import annotations

import dataclasses
import logging

from tillsight.errors import ConversionError

from . import tflite
from .edgetpu_compiler import COMPILED_MODEL_FILE, compile_model, find_compiler, not_compiled_note
from .edgetpu_preflight import preflight
from .job import ConversionJob, TargetResult

__all__ = ["convert"]

logger = logging.getLogger(__name__)


def convert(job: ConversionJob) -> TargetResult:
    """Build the Edge TPU bundle contents in ``job.staging_dir``.

    Raises:
        ConversionError: An op cannot map and the profile requires a fully mapped model,
            or the compiler failed.
    """
    result = tflite.convert(job)
    report = preflight(job.staging_dir / result.model_file)
    if job.profile.edgetpu.require_full_mapping and not report.fully_mapped:
        first = report.first_unmapped
        raise ConversionError(
            f"profile '{job.profile.name}' requires every op on the Edge TPU, but op {first.index} {first.op} "
            f"cannot map ({first.reason}); replace that layer or set [edgetpu] require_full_mapping = false"
        )
    if not report.fully_mapped:
        logger.warning("Edge TPU preflight: %s", report.summary())
    compiler = find_compiler()
    if compiler is None:
        compiled = not_compiled_note()
        logger.warning("%s: %s", compiled["reason"], compiled["next_step"])
        files = result.files
    else:
        compiled = compile_model(job.staging_dir / result.model_file, job.staging_dir, compiler)
        files = (*result.files, COMPILED_MODEL_FILE)
    return dataclasses.replace(
        result,
        files=files,
        runtime_options={"edgetpu_model": COMPILED_MODEL_FILE if compiler else None},
        report={**result.report, "edgetpu_preflight": report.to_dict(), "edgetpu_compiler": compiled},
    )
