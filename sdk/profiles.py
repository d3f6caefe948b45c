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
import re
import sys
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from .errors import ProfileError
from .profile_tables import (
    FINETUNE_EPOCHS,
    Amount,
    BackendKind,
    Budgets,
    ChannelCriterion,
    Count,
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
    default_finetune_epochs,
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
    "default_finetune_epochs",
    "PruningOptions",
    "Budgets",
    "Precision",
    "PerformanceHint",
    "OpenVINOOptions",
    "EdgeTPUOptions",
    "Profile",
    "load_profile",
    "list_profiles",
    "with_current_keys",
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
    threads: Count = 1
    device: str = ""  # backend device string, e.g. "GPU" (OpenVINO) or "usb:0" (Edge TPU)
    max_top1_drop: Amount = 1.0  # accuracy tolerance in top-1 points against the float model
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
        table = with_current_keys(table, where)
        _refuse_unknown_keys(cls, table, where, prefix="")
        try:
            return msgspec.convert({**table, "name": name, "file": file}, cls)
        except msgspec.ValidationError as exc:  # the checks of __post_init__ raise ProfileError themselves
            raise ProfileError(f"{where}: {_in_words(str(exc), table)}") from exc


def _refuse_unknown_keys(cls: Any, table: dict[str, Any], where: str, prefix: str) -> None:
    """Refuse a key that is no field of ``cls`` (or of its tables), naming the allowed ones."""
    hints = typing.get_type_hints(cls)
    derived = ("name", "file") if not prefix else ()  # the profile's own, taken from its file name
    for key, value in table.items():
        if key not in hints or key in derived:
            allowed = ", ".join(sorted(k for k in hints if k not in derived))
            raise ProfileError(f"{where}: unknown key '{prefix}{key}' (allowed: {allowed})")
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            _refuse_unknown_keys(hints[key], value, where, prefix=f"{prefix}{key}.")


#: msgspec's names of JSON types, as a profile's author reads them.
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "array": "a list",
    "object": "a table",
}


def _in_words(error: str, table: dict[str, Any]) -> str:
    """msgspec's validation error (``Expected `int`, got `str` - at `$.threads```) in a profile's terms."""
    what, _, at = error.partition(" - at `$")
    path = re.sub(r"\[\d+\]", "", at.rstrip("`")).lstrip(".")
    value: Any = table
    for part in path.split(".") if path else ():
        value = value.get(part) if isinstance(value, dict) else None
    if what.startswith("Invalid enum value"):
        kind = _hint_at(Profile, path.split("."))
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            allowed = ", ".join(str(member.value) for member in kind)
        else:  # a Literal
            allowed = ", ".join(str(choice) for choice in typing.get_args(kind))
        return f"'{path}' = {value!r} is not allowed (allowed: {allowed})"
    if missing := re.match(r"Object missing required field `(\w+)`", what):
        return f"missing required key '{path + '.' if path else ''}{missing[1]}'"
    if ">= 0" in what:
        return f"'{path}' must not be negative, got {value!r}"
    if length := re.match(r"Expected `array` of length (\d+)", what):
        return f"'{path}' must be a list of {length[1]} values, got {value!r}"
    if expected := re.match(r"Expected `(\w+)`", what):
        kind_words = _TYPE_WORDS.get(expected[1], f"a {expected[1]}")
        return f"'{path}' must be {kind_words}" + (f" ([{path}])" if expected[1] == "object" else f", got {value!r}")
    return f"'{path}': {what}"


def _hint_at(cls: Any, parts: list[str]) -> Any:
    """The type of the field at ``parts`` below ``cls``, through ``X | None`` and ``tuple[X, ...]``."""
    hint = cls
    for part in parts:
        hint = typing.get_type_hints(hint).get(part)
        while typing.get_origin(hint) in (typing.Union, types.UnionType, tuple):
            hint = next(arg for arg in typing.get_args(hint) if arg not in (type(None), Ellipsis))
    return hint


#: Keys renamed so that one concept has one name (images, as ConversionOptions and the CLI say); the old ones are still read.
_OLD_QUANTIZATION_KEYS = {"calibration_samples": "calibration_images", "min_calibration_samples": "min_calibration_images"}


def with_current_keys(table: dict[str, Any], where: str) -> dict[str, Any]:
    """A profile's tables with every renamed key under its current name (profile files and the profile copies of
    older manifests say ``fallbacks``, ``pruning.target``, ``quantization.calibration_samples``).

    Raises:
        ProfileError: A table gives both a key and its old name.
    """
    table = dict(table)
    _rename_old_keys(table, where, "", {"fallbacks": "backend_fallbacks"})
    for name, renamed in (("quantization", _OLD_QUANTIZATION_KEYS), ("pruning", {"target": "fraction"})):
        if isinstance(table.get(name), dict):
            table[name] = dict(table[name])
            _rename_old_keys(table[name], where, f"{name}.", renamed)
    return table


def _rename_old_keys(table: dict[str, Any], where: str, prefix: str, renamed: dict[str, str]) -> None:
    """Read each old key of ``table`` under its new name; both at once is refused."""
    for old, new in renamed.items():
        if old in table:
            if new in table:
                raise ProfileError(f"{where}: '{prefix}{old}' is the old name of '{prefix}{new}'; keep only the latter")
            table[new] = table.pop(old)


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
