"""What a conversion measured, as recorded in a bundle's manifest: typed, validated on read.

``manifest.json`` keeps these as JSON objects under ``"metrics"``; reading the manifest
(:meth:`tillsight.bundle.Manifest.from_dict`) decodes them with msgspec into the frozen dataclasses
below and refuses anything malformed, so that readers (``tillsight inspect``, ``tillsight report``,
the bench, kiosk apps) use attributes, never keys. The converters build them from their flat reports
(``from_report``); what a reader does not need (per-layer pruning tables) stays in ``details``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import numpy as np

from .jsonfile import json_ready

__all__ = [
    "AccuracyMetrics",
    "latency_percentiles_ms",
    "percent_equal",
    "BundleMetrics",
    "LatencyMetrics",
    "LatencyStats",
    "PruningMetrics",
    "QatMetrics",
    "TrainingMetrics",
]


_T = TypeVar("_T")


def percent_equal(a: Any, b: Any, digits: int = 3) -> float:
    """Share of positions where two equally long label arrays agree, in percent (top-1, agreement)."""
    a, b = np.asarray(a), np.asarray(b)
    return round(100.0 * float(np.mean(a == b)), digits) if a.size else 0.0


def latency_percentiles_ms(seconds: Sequence[float], quantiles: Sequence[float] = (50, 95)) -> tuple[float, ...]:
    """Percentiles of measured durations in milliseconds (linear interpolation, so p50 is the median);
    the one definition behind every latency the SDK, the pipeline and the bench report."""
    return tuple(round(float(v), 3) for v in np.percentile(np.asarray(seconds, np.float64), quantiles) * 1e3)


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Percentiles of one timed loop, in milliseconds (:func:`~tillsight.bundle_metrics.latency_percentiles_ms`)."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        """The percentiles of measured durations (at least one)."""
        if not seconds:
            raise ValueError("no timed run to summarise")
        p50, p95, p99 = latency_percentiles_ms(seconds, (50, 95, 99))
        return cls(p50, p95, p99, len(seconds))


def _from_report(cls: type[_T], report: Mapping[str, Any], **sections: Any) -> _T:
    """``cls`` from a converter's flat report: its fields from the keys of the same name, the other keys
    kept as ``details``; ``sections`` are its fields already built (a nested training run).

    Raises:
        msgspec.ValidationError: A field has the wrong type (a bug in the converter that wrote it).
    """
    known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    data = {key: value for key, value in report.items() if key in known and key not in sections}
    data["details"] = {key: value for key, value in report.items() if key not in known}
    return msgspec.convert({**data, **{name: json_ready(value) for name, value in sections.items()}}, cls)


def _plain(value: Any) -> dict[str, Any]:
    """The JSON form of a metrics dataclass, without the fields that are None."""
    data: dict[str, Any] = json_ready(value)
    return {key: item for key, item in data.items() if item is not None}


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
        """JSON-ready form, with the drops spelled out for a reader of the file (they are not read back)."""
        data = {**_plain(self), "top1_drop": self.top1_drop}
        if self.pruned_top1 is not None:
            data["steps"] = {
                "float_to_pruned_drop": self.float_to_pruned_drop,
                "pruned_to_converted_drop": self.pruned_to_converted_drop,
            }
        return data


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
        return _plain(self)


@dataclasses.dataclass(frozen=True)
class TrainingMetrics:
    """One training run of a conversion step (fine-tuning after pruning, QAT, distillation)."""

    epochs: int
    seconds: float
    loss: tuple[float, ...] = ()  # per epoch
    photos: int | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # what else the run reported

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _plain(self)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> TrainingMetrics:
        """From a training loop's flat report (:func:`_from_report`)."""
        return _from_report(cls, report)


#: The fields a pruning mode must record.
_PRUNING_FIELDS = {
    "unstructured": ("sparsity", "pruned_weights"),
    "channels": ("kept_channels", "prunable_channels", "macs_before", "macs_after"),
}


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

    def __post_init__(self) -> None:
        missing = [name for name in _PRUNING_FIELDS.get(self.mode, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.mode} pruning must record {', '.join(missing)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _plain(self)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> PruningMetrics:
        """From the pruning step's flat report, its fine-tuning's report under ``finetune``."""
        finetune = report.get("finetune")
        if finetune is None:
            return _from_report(cls, report)
        return _from_report(cls, report, finetune=TrainingMetrics.from_report(finetune))


@dataclasses.dataclass(frozen=True)
class QatMetrics:
    """Quantization-aware fine-tuning: the training run and the quantizers it learned."""

    training: TrainingMetrics
    activation_quantizers: int
    finetune_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _plain(self)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> QatMetrics:
        """From QAT's flat report: the training run's keys, the quantizer count and the photos' source."""
        own = {"activation_quantizers", "finetune_source"}
        training = TrainingMetrics.from_report({key: value for key, value in report.items() if key not in own})
        data = {key: value for key, value in report.items() if key in own}
        return msgspec.convert({**data, "training": json_ready(training)}, cls)


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
