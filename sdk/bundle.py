"""Bundles: the only thing that crosses from the converting machine to the device.

A bundle is a directory holding the model file(s) and ``manifest.json``. The manifest
carries everything the runtime needs (labels, input and output specs, runtime settings)
and the record of how the bundle was made (profile, source model sha256, quantization,
measured metrics), plus the sha256 of every artifact, checked before anything is loaded.

Bundles are written atomically (:mod:`.staging`): they are built in a hidden staging directory
next to the output and renamed into place only when complete, so a failed or interrupted
conversion never leaves a partial bundle and never replaces a good one.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ._version import __version__
from .bundle_metrics import BundleMetrics
from .errors import BundleError
from .input_spec import InputSpec
from .profiles import BackendKind
from .signing import TrustedKey, verify_signature

__all__ = [
    "MANIFEST_NAME",
    "FORMAT_VERSION",
    "OutputActivation",
    "OutputSpec",
    "RuntimeSettings",
    "Manifest",
    "Bundle",
    "artifact_path",
    "gzip_bytes",
    "read_bundle",
    "write_manifest",
    "sha256_of_file",
]


MANIFEST_NAME = "manifest.json"
#: The conformance set (:mod:`tillsight.conformance`): an artifact, but not a model file.
CONFORMANCE_FILE = "conformance.npz"
FORMAT_NAME = "tillsight-bundle"
FORMAT_VERSION = 1


class OutputActivation(str, enum.Enum):
    """What the source model's output is, told from its values on a few images at conversion."""

    SOFTMAX = "softmax"  # probabilities: the model ends in a softmax
    SOFTMAX_ADDED = "softmax-added"  # logits: the converted model gets a softmax appended
    SIGMOID = "sigmoid"  # independent per-class scores (multi-label)


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """The model's class-score output."""

    num_classes: int
    dtype: str  # uint8 | int8 | float32
    scale: float
    zero_point: int
    activation: OutputActivation

    def __post_init__(self) -> None:
        object.__setattr__(self, "activation", OutputActivation(self.activation))  # from JSON: the value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form recorded in the manifest."""
        return {**dataclasses.asdict(self), "activation": self.activation.value}


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """How the device runs the bundle (copied from the profile at conversion time)."""

    backend: BackendKind
    model_file: str
    threads: int
    backend_fallbacks: tuple[BackendKind, ...] = ()
    device: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # backend-specific, e.g. OpenVINO's

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form recorded in the manifest."""
        return {
            "backend": self.backend.value,
            "model_file": self.model_file,
            "threads": self.threads,
            "backend_fallbacks": [b.value for b in self.backend_fallbacks],
            "device": self.device,
            "options": self.options,
        }


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The parsed, validated ``manifest.json`` of a bundle."""

    profile_name: str
    labels: tuple[str, ...]
    input: InputSpec
    output: OutputSpec
    runtime: RuntimeSettings
    artifacts: dict[str, dict[str, Any]]  # file name -> {"sha256": ..., "bytes": ...}
    profile: dict[str, Any] = dataclasses.field(default_factory=dict)
    source_model: dict[str, Any] = dataclasses.field(default_factory=dict)
    quantization: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: BundleMetrics = BundleMetrics(model_bytes=0)
    target_report: dict[str, Any] = dataclasses.field(default_factory=dict)
    sdk_version: str = __version__
    created: str = ""
    tune: dict[str, Any] = dataclasses.field(default_factory=dict)  # the search that chose this bundle (tillsight tune)

    @property
    def model_artifacts(self) -> list[str]:
        """The files the runtime loads (the artifacts but the conformance set a fleet kiosk checks)."""
        return [name for name in self.artifacts if name != CONFORMANCE_FILE]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form written as ``manifest.json``."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "sdk_version": self.sdk_version,
            "created": self.created,
            "profile_name": self.profile_name,
            "labels": list(self.labels),
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "runtime": self.runtime.to_dict(),
            "artifacts": self.artifacts,
            "profile": self.profile,
            "source_model": self.source_model,
            "quantization": self.quantization,
            "metrics": self.metrics.to_dict(),
            "target_report": self.target_report,
            **({"tune": self.tune} if self.tune else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """Validate manifest data read from ``where``.

        Raises:
            BundleError: A key is missing or has the wrong type, or the format is unknown.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise BundleError(f'{where} is not a tillsight manifest (no "format": "{FORMAT_NAME}")')
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BundleError(
                f"{where} has bundle format {version!r}, this tillsight {__version__} reads up to "
                f"{FORMAT_VERSION}; upgrade tillsight on the device"
            )
        try:
            labels = tuple(str(label) for label in _typed(data, "labels", list))
            output = OutputSpec(**_typed(data, "output", dict))
            runtime_data = _typed(data, "runtime", dict)
            runtime = RuntimeSettings(
                backend=BackendKind(runtime_data["backend"]),
                model_file=str(runtime_data["model_file"]),
                threads=int(runtime_data["threads"]),
                # "fallbacks" in bundles written before the rename
                backend_fallbacks=tuple(
                    BackendKind(b) for b in runtime_data.get("backend_fallbacks", runtime_data.get("fallbacks", []))
                ),
                device=str(runtime_data.get("device", "")),
                options=dict(runtime_data.get("options", {})),
            )
            manifest = cls(
                profile_name=str(_typed(data, "profile_name", str)),
                labels=labels,
                input=InputSpec.from_dict(_typed(data, "input", dict)),
                output=output,
                runtime=runtime,
                artifacts=_typed(data, "artifacts", dict),
                profile=data.get("profile", {}),
                source_model=data.get("source_model", {}),
                quantization=data.get("quantization", {}),
                metrics=BundleMetrics.from_dict(data.get("metrics", {"model_bytes": 0})),
                target_report=data.get("target_report", {}),
                sdk_version=str(data.get("sdk_version", "")),
                created=str(data.get("created", "")),
                tune=dict(data.get("tune", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where} is malformed ({type(exc).__name__}: {exc}); convert the model again") from exc
        if len(manifest.labels) != manifest.output.num_classes:
            raise BundleError(f"{where} lists {len(manifest.labels)} labels for {manifest.output.num_classes} outputs")
        if manifest.runtime.model_file not in manifest.artifacts:
            raise BundleError(f"{where}: model file '{manifest.runtime.model_file}' is not among its artifacts")
        return manifest


def _typed(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind):
        raise TypeError(f"'{key}' must be a {kind.__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        """The main model file."""
        return self.path / self.manifest.runtime.model_file


def gzip_bytes(paths: Iterable[Path]) -> int:
    """Total size of the files after gzip at level 9: what a download or an over-the-air update moves."""
    return sum(len(gzip.compress(Path(path).read_bytes(), compresslevel=9)) for path in paths)


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_path(bundle_dir: Path, name: str) -> Path:
    """Resolve an artifact name inside the bundle, refusing names that escape it.

    Raises:
        BundleError: The name is absolute, contains ``..``, or resolves outside the bundle.
    """
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BundleError(f"bundle {bundle_dir}: artifact name {name!r} points outside the bundle; refusing it")
    root = bundle_dir.resolve()
    resolved = (root / pure).resolve()
    if resolved != root and root not in resolved.parents:
        raise BundleError(f"bundle {bundle_dir}: artifact {name!r} resolves outside the bundle; refusing it")
    return resolved


def read_bundle(path: str | Path, verify: bool = True, trusted_keys: Sequence[TrustedKey] = ()) -> Bundle:
    """Read and verify a bundle directory.

    Args:
        path: The bundle directory (``OUT/<profile>``).
        verify: Check every artifact's size and sha256 against the manifest.
        trusted_keys: When given, the manifest must be signed by one of them (see
            :mod:`tillsight.signing`), checked before anything else is read.

    Returns:
        The bundle.

    Raises:
        BundleError: Not a bundle, a malformed manifest, or an artifact that is missing or
            does not match its recorded sha256.
        SignatureError: ``trusted_keys`` given, and the bundle is unsigned, signed by another
            key, or its manifest changed after signing.
    """
    bundle_dir = Path(path)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir} is not a tillsight bundle (no {MANIFEST_NAME}); make one with 'tillsight convert'")
    try:
        manifest_bytes = manifest_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{manifest_path} cannot be read ({exc.strerror}); check the bundle's permissions") from exc
    if trusted_keys:  # the same bytes are verified and parsed
        verify_signature(bundle_dir, manifest_bytes, trusted_keys)
    try:
        data = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} cannot be read as JSON ({exc}); convert the model again") from exc
    manifest = Manifest.from_dict(data, str(manifest_path))
    for name, record in manifest.artifacts.items():
        file_path = artifact_path(bundle_dir, name)
        if not file_path.is_file():
            raise BundleError(f"bundle {bundle_dir} is missing its artifact '{name}'; copy the whole bundle directory")
        if not verify:
            continue
        if not isinstance(record, dict) or "sha256" not in record or "bytes" not in record:
            raise BundleError(f"{manifest_path}: artifact '{name}' has no sha256/bytes record")
        size = file_path.stat().st_size
        if size != record["bytes"] or sha256_of_file(file_path) != record["sha256"]:
            raise BundleError(
                f"bundle artifact {file_path} does not match its manifest (size or sha256 differs): "
                "the file is corrupt or was modified; copy or convert the bundle again"
            )
    return Bundle(bundle_dir, manifest)


def write_manifest(bundle_dir: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` and flush it to disk."""
    path = bundle_dir / MANIFEST_NAME
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest.to_dict(), handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
