"""Edge TPU tools that need no TensorFlow: the preflight check and compiling a bundle.

``check(MODEL.tflite | BUNDLE)`` reports which ops map to the Edge TPU; ``compile_bundle``
runs ``edgetpu_compiler`` on a bundle made where the compiler was missing and replaces
the bundle atomically with one that carries ``model_edgetpu.tflite``.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from .bundle import Bundle, read_bundle, sha256_of_file, staged_directory, write_manifest
from .errors import BundleError
from .profiles import BackendKind

__all__ = ["check", "compile_bundle"]


def check(path: str | Path):
    """Edge TPU preflight of a ``.tflite`` file or of a bundle's int8 model.

    Returns:
        A :class:`tillsight.converters.edgetpu_preflight.PreflightReport`.

    Raises:
        BundleError: Not a readable model or bundle.
    """
    from tillsight.converters.edgetpu_preflight import preflight

    path = Path(path)
    if path.is_dir():
        bundle = read_bundle(path)
        if not bundle.manifest.runtime.model_file.endswith(".tflite"):
            raise BundleError(f"{path} is a {bundle.manifest.runtime.backend.value} bundle, not a TFLite one")
        path = bundle.model_path
    elif not path.is_file():
        raise BundleError(f"{path} does not exist (expected a .tflite file or a bundle directory)")
    return preflight(path)


def compile_bundle(bundle_dir: str | Path, compiler: str | None = None) -> Bundle:
    """Compile an Edge TPU bundle's int8 model with ``edgetpu_compiler`` (x86-64 Linux).

    Raises:
        BundleError: Not an Edge TPU bundle.
        ConversionError: The compiler is missing or failed; the bundle is left as it was.
    """
    from tillsight.converters.edgetpu_compiler import COMPILED_MODEL_FILE, compile_model

    bundle = read_bundle(bundle_dir)
    manifest = bundle.manifest
    if manifest.runtime.backend is not BackendKind.EDGETPU:
        raise BundleError(f"{bundle.path} is a {manifest.runtime.backend.value} bundle; compile only Edge TPU bundles")
    with staged_directory(bundle.path) as staging:
        for name in manifest.artifacts:
            shutil.copy2(bundle.path / name, staging / name)
        report = compile_model(staging / manifest.runtime.model_file, staging, compiler)
        compiled = staging / COMPILED_MODEL_FILE
        artifacts = {
            **manifest.artifacts,
            COMPILED_MODEL_FILE: {"sha256": sha256_of_file(compiled), "bytes": compiled.stat().st_size},
        }
        runtime = dataclasses.replace(manifest.runtime, options={**manifest.runtime.options, "edgetpu_model": COMPILED_MODEL_FILE})
        target_report = {**manifest.target_report, "edgetpu_compiler": report}
        write_manifest(staging, dataclasses.replace(manifest, artifacts=artifacts, runtime=runtime, target_report=target_report))
    return read_bundle(bundle.path)
