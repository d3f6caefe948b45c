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
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from ._version import __version__
from .bundle_metrics import BundleMetrics, PruningMetrics, QatMetrics
from .errors import BundleError, TillsightError
from .input_spec import InputSpec
from .jsonfile import json_ready, write_json_file
from .profiles import BackendKind, Profile, with_current_keys
from .signing import TrustedKey, verify_signature

__all__ = [
    "MANIFEST_NAME",
    "FORMAT_VERSION",
    "OutputActivation",
    "OutputSpec",
    "RuntimeSettings",
    "ArtifactRecord",
    "SourceModelRecord",
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
FORMAT_VERSION = 2  # 2: training runs keep their extra figures under "details"; QAT's run under "training"


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


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """How the device runs the bundle (copied from the profile at conversion time)."""

    backend: BackendKind
    model_file: str
    threads: int
    backend_fallbacks: tuple[BackendKind, ...] = ()
    device: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # backend-specific, e.g. OpenVINO's


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    """One file of the bundle as the converter wrote it: checked before anything is loaded."""

    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path) -> ArtifactRecord:
        """The record of the file at ``path``."""
        return cls(sha256_of_file(path), path.stat().st_size)


@dataclasses.dataclass(frozen=True)
class SourceModelRecord:
    """The Keras model the bundle was converted from."""

    path: str = ""  # as the converter was given it, or a description of an in-memory model
    format: str = ""  # keras | h5 | saved_model | in-memory
    sha256: str = ""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The parsed, validated ``manifest.json`` of a bundle (its JSON Schema: ``tillsight/schemas/manifest.schema.json``).

    The converter-specific records (``quantization``, ``target_report``, ``tune`` and the runtime's
    ``options``) stay JSON objects: each converter target writes its own, and readers display them.
    """

    profile_name: str
    labels: tuple[str, ...]
    input: InputSpec
    output: OutputSpec
    runtime: RuntimeSettings
    artifacts: dict[str, ArtifactRecord]  # file name -> its sha256 and size
    profile: Profile | None = None  # the profile it was converted for, as it was then
    source_model: SourceModelRecord = SourceModelRecord()
    quantization: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: BundleMetrics = BundleMetrics(model_bytes=0)
    target_report: dict[str, Any] = dataclasses.field(default_factory=dict)
    sdk_version: str = __version__
    created: str = ""
    tune: dict[str, Any] = dataclasses.field(default_factory=dict)  # the search that chose this bundle (tillsight tune)

    def __post_init__(self) -> None:
        if len(self.labels) != self.output.num_classes:
            raise ValueError(f"it lists {len(self.labels)} labels for {self.output.num_classes} outputs")
        if self.runtime.model_file not in self.artifacts:
            raise ValueError(f"model file '{self.runtime.model_file}' is not among its artifacts")

    @property
    def model_artifacts(self) -> list[str]:
        """The files the runtime loads (the artifacts but the conformance set a fleet kiosk checks)."""
        return [name for name in self.artifacts if name != CONFORMANCE_FILE]

    @property
    def model_sha256(self) -> str:
        """The sha256 of the main model file: the same wherever the bundle is copied."""
        return self.artifacts[self.runtime.model_file].sha256

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form written as ``manifest.json``."""
        data: dict[str, Any] = json_ready(self)
        data["metrics"] = self.metrics.to_dict()
        if data["profile"] is None:
            del data["profile"]
        if not self.tune:
            del data["tune"]
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """Decode and validate manifest data read from ``where`` (older formats are upgraded first).

        Raises:
            BundleError: A key is missing or has the wrong type, or the format is unknown.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise BundleError(f'{where} is not a tillsight manifest (no "format": "{FORMAT_NAME}")')
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
            raise BundleError(
                f"{where} has bundle format {version!r}, this tillsight {__version__} reads up to "
                f"{FORMAT_VERSION}; upgrade tillsight on the device"
            )
        try:
            return msgspec.convert(_upgraded(data) if version < FORMAT_VERSION else data, cls)
        except (msgspec.ValidationError, TillsightError) as exc:  # TillsightError: a nested check (input, profile)
            raise BundleError(f"{where} is malformed ({exc}); convert the model again") from exc


def _upgraded(data: dict[str, Any]) -> Any:
    """A format-1 manifest in today's form: the renamed keys under their names, and the training runs'
    extra keys, written flat then, under ``details``."""
    try:
        data = json.loads(json.dumps(data))  # a copy to reshape
        runtime = data["runtime"]
        if "fallbacks" in runtime and "backend_fallbacks" not in runtime:
            runtime["backend_fallbacks"] = runtime.pop("fallbacks")
        data["profile"] = with_current_keys(data["profile"], "manifest") if data.get("profile") else None
        metrics = data.get("metrics") or {}
        if isinstance(metrics.get("pruning"), dict):
            pruning = metrics["pruning"]
            pruning.setdefault("fraction", pruning.pop("target", None))
            metrics["pruning"] = PruningMetrics.from_report(pruning).to_dict()
        if isinstance(metrics.get("qat"), dict):
            metrics["qat"] = QatMetrics.from_report(metrics["qat"]).to_dict()
    except (KeyError, TypeError, AttributeError, msgspec.ValidationError, ValueError, TillsightError):
        return data  # malformed: decoding it says where
    return data


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
        if file_path.stat().st_size != record.bytes or sha256_of_file(file_path) != record.sha256:
            raise BundleError(
                f"bundle artifact {file_path} does not match its manifest (size or sha256 differs): "
                "the file is corrupt or was modified; copy or convert the bundle again"
            )
    return Bundle(bundle_dir, manifest)


def write_manifest(bundle_dir: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` (atomically) and flush it to disk."""
    write_json_file(bundle_dir / MANIFEST_NAME, manifest.to_dict(), durable=True)
