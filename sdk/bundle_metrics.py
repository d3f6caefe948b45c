"""What a conversion measured, as recorded in a bundle's manifest: typed, validated on read.

``manifest.json`` keeps these as JSON objects under ``"metrics"``; :meth:`BundleMetrics.from_dict`
turns them into the frozen dataclasses below and refuses anything malformed, so that readers
(``tillsight inspect``, ``tillsight report``, the bench, kiosk apps) use attributes, never keys.
Fields a reader does not need (per-layer pruning tables, loss curves) stay in ``details``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AccuracyMetrics",
    "latency_percentiles_ms",
    "percent_equal",
    "BundleMetrics",
    "LatencyMetrics",
    "PruningMetrics",
    "QatMetrics",
    "TrainingMetrics",
]


def percent_equal(a: Any, b: Any, digits: int = 3) -> float:
    """Share of positions where two equally long label arrays agree, in percent (top-1, agreement)."""
    a, b = np.asarray(a), np.asarray(b)
    return round(100.0 * float(np.mean(a == b)), digits) if a.size else 0.0


def latency_percentiles_ms(seconds: Sequence[float], quantiles: Sequence[float] = (50, 95)) -> tuple[float, ...]:
    """Percentiles of measured durations in milliseconds (linear interpolation, so p50 is the median);
    the one definition behind every latency the SDK, the pipeline and the bench report."""
    return tuple(round(float(v), 3) for v in np.percentile(np.asarray(seconds, np.float64), quantiles) * 1e3)


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    """``data[key]`` checked against ``kind`` (an int is a valid float, a bool is not a number).

    Raises:
        KeyError: A required key is missing.
        TypeError: The value has another type.
    """
    if key not in data or data[key] is None:
        if optional:
            return None
        raise KeyError(f"metrics field '{key}' is missing")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds:
        kinds = (*kinds, int)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise TypeError(f"metrics field '{key}' must be {names}, got {type(value).__name__}")
    if float in kinds and isinstance(value, int):
        return float(value)
    return value


def _all_numbers(values: Any) -> bool:
    """Whether every value is an int or a float (a bool is not a number here)."""
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)


def _mapping(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"metrics '{what}' must be an object, got {type(data).__name__}")
    return data


def _rest(data: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The keys of ``data`` that are not fields of ``cls``: kept as ``details``."""
    known = {field.name for field in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key not in known}


@dataclasses.dataclass(frozen=True)
class AccuracyMetrics:
    """Top-1 of the float and converted models on the same readable evaluation images (percent)."""

    images: int
    skipped: int
    float_top1: float
    converted_top1: float
    top1_agreement: float  # percent of images on which both models pick the same class
    pruned_top1: float | None = None  # the pruned float model, when the conversion pruned
    source: str = ""  # the evaluation data
    tolerance: float | None = None  # the profile's max_top1_drop
    within_tolerance: bool | None = None

    @property
    def top1_drop(self) -> float:
        """Points of top-1 lost by conversion (negative when the converted model is better)."""
        return round(self.float_top1 - self.converted_top1, 3)

    @property
    def float_to_pruned_drop(self) -> float | None:
        """Points lost by pruning (and its fine-tuning), when the conversion pruned."""
        return None if self.pruned_top1 is None else round(self.float_top1 - self.pruned_top1, 3)

    @property
    def pruned_to_converted_drop(self) -> float | None:
        """Points lost by quantizing the pruned model, when the conversion pruned."""
        return None if self.pruned_top1 is None else round(self.pruned_top1 - self.converted_top1, 3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; with pruning, the drop of each step too."""
        data = {**dataclasses.asdict(self), "top1_drop": self.top1_drop}
        if self.pruned_top1 is not None:
            data["steps"] = {
                "float_to_pruned_drop": self.float_to_pruned_drop,
                "pruned_to_converted_drop": self.pruned_to_converted_drop,
            }
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_dict(cls, data: Any) -> AccuracyMetrics:
        """Raises KeyError or TypeError when malformed (the manifest reader turns them into BundleError)."""
        data = _mapping(data, "accuracy")
        return cls(
            images=_field(data, "images", int),
            skipped=_field(data, "skipped", int),
            float_top1=_field(data, "float_top1", float),
            converted_top1=_field(data, "converted_top1", float),
            top1_agreement=_field(data, "top1_agreement", float),
            pruned_top1=_field(data, "pruned_top1", float, optional=True),
            source=_field(data, "source", str, optional=True) or "",
            tolerance=_field(data, "tolerance", float, optional=True),
            within_tolerance=_field(data, "within_tolerance", bool, optional=True),
        )


@dataclasses.dataclass(frozen=True)
class LatencyMetrics:
    """Backend inference time measured on the converting host at conversion time (not the device)."""

    p50_ms: float
    p95_ms: float
    runs: int
    engine: str
    host: str
    threads: int | None = None
    note: str = "measured on the converting host, not on the device"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> LatencyMetrics:
        """Raises KeyError or TypeError when malformed."""
        data = _mapping(data, "latency_host")
        return cls(
            p50_ms=_field(data, "p50_ms", float),
            p95_ms=_field(data, "p95_ms", float),
            runs=_field(data, "runs", int),
            engine=_field(data, "engine", str),
            host=_field(data, "host", str),
            threads=_field(data, "threads", int, optional=True),
            note=_field(data, "note", str, optional=True) or "",
        )


@dataclasses.dataclass(frozen=True)
class TrainingMetrics:
    """One training run of a conversion step (fine-tuning after pruning, QAT)."""

    epochs: int
    seconds: float
    loss: tuple[float, ...] = ()  # per epoch
    photos: int | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (details merged back in)."""
        data = {"epochs": self.epochs, "seconds": self.seconds, "loss": list(self.loss), "photos": self.photos}
        return {**self.details, **{key: value for key, value in data.items() if value is not None}}

    @classmethod
    def from_dict(cls, data: Any, what: str = "finetune") -> TrainingMetrics:
        """Raises KeyError or TypeError when malformed."""
        data = _mapping(data, what)
        loss = _field(data, "loss", list, optional=True) or []
        if not _all_numbers(loss):
            raise TypeError(f"metrics '{what}' loss must be a list of numbers")
        return cls(
            epochs=_field(data, "epochs", int),
            seconds=_field(data, "seconds", float),
            loss=tuple(float(value) for value in loss),
            photos=_field(data, "photos", int, optional=True),
            details=_rest(data, cls),
        )


@dataclasses.dataclass(frozen=True)
class PruningMetrics:
    """What pruning removed, and its fine-tuning when it ran."""

    mode: str  # "channels" | "unstructured"
    fraction: float  # what was asked: of the weights zeroed, or of the channels removed
    parameters_before: int
    parameters_after: int
    finetune: TrainingMetrics | None = None
    finetune_source: str | None = None
    gzip_bytes: int | None = None
    gzip_bytes_unpruned: int | None = None  # unstructured: the same converter target's file from the unpruned model
    sparsity: float | None = None  # unstructured: share of kernel weights that are zero
    pruned_weights: int | None = None  # unstructured: kernel weights considered
    kept_channels: int | None = None  # channels
    prunable_channels: int | None = None
    removed_fraction: float | None = None
    macs_before: int | None = None
    macs_after: int | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-kernel or per-group tables

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (details merged back in)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "details"}
        data["finetune"] = self.finetune.to_dict() if self.finetune is not None else None
        return {**self.details, **{key: value for key, value in data.items() if value is not None}}

    @classmethod
    def from_dict(cls, data: Any) -> PruningMetrics:
        """Raises KeyError or TypeError when malformed."""
        data = _mapping(data, "pruning")
        finetune = data.get("finetune")
        required = {
            "unstructured": ("sparsity", "pruned_weights"),
            "channels": ("kept_channels", "prunable_channels", "macs_before", "macs_after"),
        }
        for key in required.get(_field(data, "mode", str), ()):
            _field(data, key, float if key == "sparsity" else int)
        return cls(
            mode=_field(data, "mode", str),
            fraction=_field(data, "fraction" if "fraction" in data else "target", float),  # "target" before 2026-12-05
            parameters_before=_field(data, "parameters_before", int),
            parameters_after=_field(data, "parameters_after", int),
            finetune=TrainingMetrics.from_dict(finetune) if finetune is not None else None,
            finetune_source=_field(data, "finetune_source", str, optional=True),
            gzip_bytes=_field(data, "gzip_bytes", int, optional=True),
            gzip_bytes_unpruned=_field(data, "gzip_bytes_unpruned", int, optional=True),
            sparsity=_field(data, "sparsity", float, optional=True),
            pruned_weights=_field(data, "pruned_weights", int, optional=True),
            kept_channels=_field(data, "kept_channels", int, optional=True),
            prunable_channels=_field(data, "prunable_channels", int, optional=True),
            removed_fraction=_field(data, "removed_fraction", float, optional=True),
            macs_before=_field(data, "macs_before", int, optional=True),
            macs_after=_field(data, "macs_after", int, optional=True),
            details=_rest({key: value for key, value in data.items() if key != "target"}, cls),
        )


@dataclasses.dataclass(frozen=True)
class QatMetrics:
    """Quantization-aware fine-tuning: the training run and the quantizers it learned."""

    training: TrainingMetrics
    activation_quantizers: int
    finetune_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (flat, as the manifest has always recorded it)."""
        data = {"activation_quantizers": self.activation_quantizers, "finetune_source": self.finetune_source}
        return {**self.training.to_dict(), **{key: value for key, value in data.items() if value is not None}}

    @classmethod
    def from_dict(cls, data: Any) -> QatMetrics:
        """Raises KeyError or TypeError when malformed."""
        data = _mapping(data, "qat")
        own = {"activation_quantizers", "finetune_source"}
        return cls(
            training=TrainingMetrics.from_dict({key: value for key, value in data.items() if key not in own}, "qat"),
            activation_quantizers=_field(data, "activation_quantizers", int),
            finetune_source=_field(data, "finetune_source", str, optional=True),
        )


@dataclasses.dataclass(frozen=True)
class BundleMetrics:
    """Everything a conversion measured; sections that did not run are None."""

    model_bytes: int
    accuracy: AccuracyMetrics | None = None
    latency_host: LatencyMetrics | None = None
    pruning: PruningMetrics | None = None
    qat: QatMetrics | None = None
    budgets: dict[str, Any] = dataclasses.field(default_factory=dict)  # budget name -> {"limit": ..., ...}
    conversion_seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # step name -> seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form recorded under ``"metrics"`` in the manifest."""
        data: dict[str, Any] = {"model_bytes": self.model_bytes}
        for name in ("latency_host", "accuracy", "pruning", "qat"):
            section = getattr(self, name)
            if section is not None:
                data[name] = section.to_dict()
        if self.budgets or self.conversion_seconds:
            data.update(budgets=self.budgets, conversion_seconds=self.conversion_seconds)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> BundleMetrics:
        """Raises KeyError or TypeError when malformed (the manifest reader turns them into BundleError)."""
        data = _mapping(data, "metrics")
        sections: dict[str, Any] = {
            "accuracy": AccuracyMetrics,
            "latency_host": LatencyMetrics,
            "pruning": PruningMetrics,
            "qat": QatMetrics,
        }
        parsed = {name: kind.from_dict(data[name]) if data.get(name) is not None else None for name, kind in sections.items()}
        budgets = _mapping(data.get("budgets", {}), "budgets")
        seconds = _mapping(data.get("conversion_seconds", {}), "conversion_seconds")
        if not _all_numbers(seconds.values()):
            raise TypeError("metrics 'conversion_seconds' must map step names to numbers")
        return cls(
            model_bytes=_field(data, "model_bytes", int), budgets=dict(budgets), conversion_seconds=dict(seconds), **parsed
        )
