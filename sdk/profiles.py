"""Device profiles: the one place where device knobs live.

A profile is a TOML file (one per device, shipped in ``device_profiles/``) parsed into
a frozen :class:`Profile`. Converters and runtimes read it; nothing else hard-codes a
device. Wherever a profile name is accepted, a path to a user's own TOML file is too.

Every key is validated here: an unknown key or a bad value raises
:class:`~tillsight.errors.ProfileError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ProfileError
from .profile_tables import (
    FINETUNE_EPOCHS,
    BackendKind,
    Budgets,
    ChannelCriterion,
    DistillationOptions,
    EdgeTPUOptions,
    InputPolicy,
    IODtype,
    OpenVINOOptions,
    PerformanceHint,
    Precision,
    PruningMode,
    PruningOptions,
    PruningScope,
    QatOptions,
    QuantizationOptions,
    ResizeMode,
    SizePolicy,
    WeightRounding,
    crop_problem,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on older device images
    import tomli as tomllib

__all__ = [
    "BackendKind",
    "ResizeMode",
    "IODtype",
    "SizePolicy",
    "PruningMode",
    "PruningScope",
    "ChannelCriterion",
    "InputPolicy",
    "crop_problem",
    "DistillationOptions",
    "QatOptions",
    "QuantizationOptions",
    "WeightRounding",
    "FINETUNE_EPOCHS",
    "PruningOptions",
    "Budgets",
    "Precision",
    "PerformanceHint",
    "OpenVINOOptions",
    "EdgeTPUOptions",
    "Profile",
    "load_profile",
    "list_profiles",
]

PROFILE_PACKAGE = "tillsight.device_profiles"
#: More CPU threads than any kiosk has cores; a profile asking for more is a typo.
MAX_THREADS = 256


@dataclasses.dataclass(frozen=True)
class Profile:
    """One device: which backend runs the model and every knob of its conversion."""

    name: str
    description: str
    backend: BackendKind
    # backends that may run the model when `backend` cannot (the Edge TPU's CPU fallback); an OpenVINO
    # device that may stand in for the profile's is `[openvino] device_fallbacks`
    backend_fallbacks: tuple[BackendKind, ...] = ()
    threads: int = 1
    device: str = ""  # backend device string, e.g. "GPU" (OpenVINO) or "usb:0" (Edge TPU)
    max_top1_drop: float = 1.0  # accuracy tolerance in top-1 points against the float model
    input: InputPolicy = InputPolicy()
    quantization: QuantizationOptions = QuantizationOptions()
    pruning: PruningOptions = PruningOptions()
    distillation: DistillationOptions = DistillationOptions()
    qat: QatOptions = QatOptions()
    budgets: Budgets = Budgets()
    openvino: OpenVINOOptions = OpenVINOOptions()
    edgetpu: EdgeTPUOptions = EdgeTPUOptions()
    file: str = ""  # the TOML file it was read from ("" for a shipped profile read by name, or built in code)

    def __post_init__(self) -> None:
        where = self.file or self.name
        if not 1 <= self.threads <= MAX_THREADS:
            raise ProfileError(f"{where}: 'threads' must be between 1 and {MAX_THREADS}, got {self.threads}")
        if not 0.0 <= self.max_top1_drop <= 100.0:
            raise ProfileError(f"{where}: 'max_top1_drop' must be between 0 and 100 points")
        height, width = self.input.size
        if height < 8 or width < 8:
            raise ProfileError(f"{where}: 'input.size' must be at least [8, 8], got {list(self.input.size)}")
        if problem := crop_problem(self.input.crop):
            raise ProfileError(f"{where}: 'input.crop' {problem}")
        quant = self.quantization
        if quant.min_calibration_images < 1 or quant.calibration_images < quant.min_calibration_images:
            raise ProfileError(
                f"{where}: need 1 <= 'quantization.min_calibration_images' <= "
                f"'quantization.calibration_images', got {quant.min_calibration_images} and "
                f"{quant.calibration_images}"
            )
        if not 0.0 <= self.pruning.fraction < 1.0:
            raise ProfileError(f"{where}: 'pruning.fraction' must be in [0, 1), got {self.pruning.fraction}")
        if self.pruning.channel_multiple < 1:
            raise ProfileError(f"{where}: 'pruning.channel_multiple' must be at least 1, got {self.pruning.channel_multiple}")
        if self.pruning.learning_rate <= 0.0:
            raise ProfileError(f"{where}: 'pruning.learning_rate' must be positive, got {self.pruning.learning_rate}")
        if problem := self.distillation.problem():
            raise ProfileError(f"{where}: {problem}")
        if self.qat.epochs < 1 or self.qat.learning_rate <= 0.0:
            raise ProfileError(
                f"{where}: 'qat.epochs' must be at least 1 and 'qat.learning_rate' positive, got {self.qat.epochs} and "
                f"{self.qat.learning_rate}"
            )
        if self.backend in self.backend_fallbacks:
            raise ProfileError(f"{where}: 'backend_fallbacks' must not repeat the backend '{self.backend.value}'")

    @classmethod
    def from_toml(cls, path: str | Path) -> Profile:
        """Read and validate one profile file.

        Args:
            path: The TOML file; the profile's name is the file name without ``.toml``.

        Returns:
            The validated profile.

        Raises:
            ProfileError: The file is missing, not valid TOML, or has a bad key or value.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"cannot read profile file {path}: {exc.strerror or exc}") from exc
        return cls.from_toml_text(text, name=path.stem, file=str(path))

    @classmethod
    def from_toml_text(cls, text: str, name: str, file: str = "") -> Profile:
        """Parse a profile from TOML text (see :meth:`from_toml`)."""
        where = file or name
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{where}: invalid TOML: {exc}") from exc
        table = dict(table)
        if "name" in table or "file" in table:
            raise ProfileError(f"{where}: 'name' and 'file' are taken from the file name; remove the key")
        _rename_old_keys(table, where, "", {"fallbacks": "backend_fallbacks"})
        if isinstance(table.get("quantization"), dict):
            table["quantization"] = dict(table["quantization"])
            _rename_old_keys(table["quantization"], where, "quantization.", _OLD_QUANTIZATION_KEYS)
        if isinstance(table.get("pruning"), dict):
            table["pruning"] = dict(table["pruning"])
            _rename_old_keys(table["pruning"], where, "pruning.", {"target": "fraction"})
        table["name"] = name
        table["file"] = file
        profile: Profile = _build(cls, table, where, prefix="")
        return profile

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain JSON-ready data (recorded in bundle manifests)."""
        plain: dict[str, Any] = _to_plain(self)
        return plain


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    return value


def _build(cls: type, table: dict[str, Any], where: str, prefix: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking every key and value."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            allowed = ", ".join(sorted(k for k in known if k not in ("name", "file")))
            raise ProfileError(f"{where}: unknown key '{prefix}{key}' (allowed: {allowed})")
    kwargs = {key: _convert(hints[key], value, where, f"{prefix}{key}") for key, value in table.items()}
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in kwargs]
    if required:
        raise ProfileError(f"{where}: missing required key '{prefix}{required[0]}'")
    return cls(**kwargs)


#: Keys renamed so that one concept has one name (images, as ConversionOptions and the CLI say); the old ones are still read.
_OLD_QUANTIZATION_KEYS = {"calibration_samples": "calibration_images", "min_calibration_samples": "min_calibration_images"}


def _rename_old_keys(table: dict[str, Any], where: str, prefix: str, renamed: dict[str, str]) -> None:
    """Read each old key of ``table`` under its new name; both at once is refused."""
    for old, new in renamed.items():
        if old in table:
            if new in table:
                raise ProfileError(f"{where}: '{prefix}{old}' is the old name of '{prefix}{new}'; keep only the latter")
            table[new] = table.pop(old)


def _convert(hint: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):  # X | None: TOML has no null
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(inner, value, where, key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ProfileError(f"{where}: '{key}' must be a table ([{key}])")
        return _build(typing.cast(type, hint), value, where, prefix=f"{key}.")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [member.value for member in hint]
        if value not in allowed:
            raise ProfileError(f"{where}: '{key}' = {value!r} is not allowed (allowed: {', '.join(allowed)})")
        return hint(value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise ProfileError(f"{where}: '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item, where, key) for item in value)
        if len(value) != len(args):
            raise ProfileError(f"{where}: '{key}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(arg, item, where, key) for arg, item in zip(args, value, strict=True))
    if hint is bool:
        if not isinstance(value, bool):
            raise ProfileError(f"{where}: '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(f"{where}: '{key}' must be an integer, got {value!r}")
        if value < 0:
            raise ProfileError(f"{where}: '{key}' must not be negative, got {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"{where}: '{key}' must be a number, got {value!r}")
        if value < 0:
            raise ProfileError(f"{where}: '{key}' must not be negative, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ProfileError(f"{where}: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported profile field type {hint!r} for {key}")  # a bug in this module


def _shipped_profile_files() -> dict[str, Any]:
    folder = resources.files(PROFILE_PACKAGE)
    return {entry.name[: -len(".toml")]: entry for entry in folder.iterdir() if entry.name.endswith(".toml")}


def list_profiles() -> list[Profile]:
    """Every profile shipped with tillsight, sorted by name.

    Returns:
        The validated shipped profiles.
    """
    files = _shipped_profile_files()
    return [
        Profile.from_toml_text(files[name].read_text(encoding="utf-8"), name=name, file=f"device_profiles/{name}.toml")
        for name in sorted(files)
    ]


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """Resolve a shipped profile name or a path to a profile file.

    Args:
        name_or_path: A shipped profile name (``raspberry-pi-4``), a path to a ``.toml``
            file, or a :class:`Profile` (returned as is).

    Returns:
        The validated profile.

    Raises:
        ProfileError: No such profile, or the file is invalid.
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    text = str(name_or_path)
    files = _shipped_profile_files()
    if text in files:
        return Profile.from_toml_text(files[text].read_text(encoding="utf-8"), name=text, file=f"device_profiles/{text}.toml")
    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist")
        return Profile.from_toml(path)
    raise ProfileError(f"unknown profile '{text}' (shipped: {', '.join(sorted(files))}; or pass a path to a .toml file)")
