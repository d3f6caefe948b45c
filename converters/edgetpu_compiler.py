"""The Edge TPU compiler step: run ``edgetpu_compiler`` when it is installed, parse its log.

:func:`compile_bundle` (``tillsight compile-edgetpu``) compiles a bundle made where the compiler
was missing and replaces it atomically with one that carries ``model_edgetpu.tflite``.

The compiler exists for x86-64 Linux only and is never installed by tillsight. Where it is
missing, bundles keep the plain int8 model and say that ``tillsight compile-edgetpu
BUNDLE`` must run where the compiler is installed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tillsight.bundle import ArtifactRecord, Bundle, read_bundle, write_manifest
from tillsight.errors import BundleError, ConversionError, summarize
from tillsight.profiles import BackendKind
from tillsight.staging import staged_directory

__all__ = [
    "COMPILED_MODEL_FILE",
    "COMPILER",
    "compile_bundle",
    "compile_model",
    "find_compiler",
    "not_compiled_note",
    "parse_compiler_log",
]

COMPILER = "edgetpu_compiler"
COMPILED_MODEL_FILE = "model_edgetpu.tflite"

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = r"([\d.]+)\s*(B|KiB|MiB|GiB)"
_FIELDS = {
    "on_chip_bytes": rf"On-chip memory used for caching model parameters:\s*{_SIZE}",
    "on_chip_remaining_bytes": rf"On-chip memory remaining for caching model parameters:\s*{_SIZE}",
    "off_chip_bytes": rf"Off-chip memory used for streaming uncached model parameters:\s*{_SIZE}",
}
_COUNTS = {
    "subgraphs": r"Number of Edge TPU subgraphs:\s*(\d+)",
    "ops_total": r"Total number of operations:\s*(\d+)",
    "ops_on_tpu": r"Number of operations that will run on Edge TPU:\s*(\d+)",
    "ops_on_cpu": r"Number of operations that will run on CPU:\s*(\d+)",
}
_OPERATOR_ROW = re.compile(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$", re.MULTILINE)


def find_compiler() -> str | None:
    """Path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which(COMPILER)


def not_compiled_note() -> dict[str, Any]:
    """What a bundle records when the compiler was not available."""
    return {
        "status": "not-compiled",
        "reason": f"{COMPILER} is not installed on the converting machine (it exists for x86-64 Linux only)",
        "next_step": f"run 'tillsight compile-edgetpu BUNDLE' on an x86-64 Linux machine with {COMPILER} installed",
    }


def parse_compiler_log(text: str) -> dict[str, Any]:
    """Parse the compiler's console output (``edgetpu_compiler -s``).

    Returns:
        Compiler version, success, memory use in bytes, subgraph and op counts, and the
        per-operator table (``op``, ``count``, ``status``, ``mapped``).
    """
    report: dict[str, Any] = {}
    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    report["compiler_version"] = version.group(1) if version else None
    report["compiled"] = "compiled successfully" in text
    for key, pattern in _FIELDS.items():
        match = re.search(pattern, text)
        report[key] = round(float(match.group(1)) * _UNITS[match.group(2)]) if match else None
    for key, pattern in _COUNTS.items():
        match = re.search(pattern, text)
        report[key] = int(match.group(1)) if match else None
    table = text.split("Operator", 1)[1] if re.search(r"^Operator\s+Count\s+Status", text, re.MULTILINE) else ""
    report["operators"] = [
        {"op": op, "count": int(count), "status": status, "mapped": status.startswith("Mapped to Edge TPU")}
        for op, count, status in _OPERATOR_ROW.findall(table)
    ]
    if report["ops_on_tpu"] is None and report["operators"]:
        report["ops_on_tpu"] = sum(row["count"] for row in report["operators"] if row["mapped"])
    return report


def compile_model(model_path: Path, out_dir: Path, compiler: str | None = None, timeout_s: int = 600) -> dict[str, Any]:
    """Compile ``model_path`` into ``out_dir/model_edgetpu.tflite``.

    Args:
        model_path: The full-int8 ``.tflite`` model.
        out_dir: Where the compiled model goes.
        compiler: The compiler executable (default: found on PATH).
        timeout_s: Give up after this long.

    Returns:
        The parsed compiler log, with ``status`` ``compiled``.

    Raises:
        ConversionError: No compiler, or it failed.
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise ConversionError(
            f"{COMPILER} is not installed here (it exists for x86-64 Linux only); "
            f"install Coral's edgetpu-compiler package on such a machine and run this there"
        )
    with tempfile.TemporaryDirectory(prefix="tillsight-edgetpu-") as work:
        try:
            completed = subprocess.run(
                [compiler, "-s", "-o", work, str(model_path)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConversionError(f"{COMPILER} could not run: {exc}") from exc
        log = completed.stdout + completed.stderr
        compiled = Path(work) / f"{model_path.stem}_edgetpu.tflite"
        if completed.returncode != 0 or not compiled.is_file():
            raise ConversionError(f"{COMPILER} failed (exit {completed.returncode}): {summarize(log, prefer_errors=True)}")
        shutil.move(str(compiled), out_dir / COMPILED_MODEL_FILE)
    return {"status": "compiled", **parse_compiler_log(log)}


def compile_bundle(bundle_dir: str | Path, compiler: str | None = None) -> Bundle:
    """Compile an Edge TPU bundle's int8 model with ``edgetpu_compiler`` (x86-64 Linux).

    Raises:
        BundleError: Not an Edge TPU bundle.
        ConversionError: The compiler is missing or failed; the bundle is left as it was.
    """
    bundle = read_bundle(bundle_dir)
    manifest = bundle.manifest
    if manifest.runtime.backend is not BackendKind.EDGETPU:
        raise BundleError(
            f"{bundle.path} is a bundle for the {manifest.runtime.backend.value} backend; compile only Edge TPU bundles"
        )
    with staged_directory(bundle.path) as staging:
        for name in manifest.artifacts:
            shutil.copy2(bundle.path / name, staging / name)
        report = compile_model(staging / manifest.runtime.model_file, staging, compiler)
        compiled = staging / COMPILED_MODEL_FILE
        artifacts = {
            **manifest.artifacts,
            COMPILED_MODEL_FILE: ArtifactRecord.of(compiled),
        }
        runtime = dataclasses.replace(
            manifest.runtime, options={**manifest.runtime.options, "edgetpu_model": COMPILED_MODEL_FILE}
        )
        target_report = {**manifest.target_report, "edgetpu_compiler": report}
        write_manifest(staging, dataclasses.replace(manifest, artifacts=artifacts, runtime=runtime, target_report=target_report))
    return read_bundle(bundle.path)
