"""The search space of ``tillsight tune`` and what the search records: candidates, budget, results.

See :mod:`tillsight.converters.tune` for the search itself.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError, OptionsError
from ..profiles import Profile, PruningMode, default_finetune_epochs

__all__ = [
    "CHANNEL_FRACTIONS",
    "STUDENT",
    "STUDENT_SCALES",
    "TuneRequirements",
    "TuneOptions",
    "CandidateStatus",
    "Candidate",
    "CandidateKind",
    "CandidateResult",
    "TuneResult",
    "TuneRecord",
    "read_tune_record",
    "search_space",
]

#: Channel fractions tried, least pruning first.
CHANNEL_FRACTIONS = (0.3, 0.5)
#: The pretrained student, and its input side as a share of the model's, largest first.
STUDENT = "efficientnet-lite0"
STUDENT_SCALES = (0.75, 0.6)


class CandidateKind(str, enum.Enum):
    INT8 = "int8"
    QAT = "qat"
    CHANNELS = "channels"
    STUDENT = "student"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the search space."""

    name: str  # also its folder under out/candidates/
    kind: CandidateKind
    recipe: str  # in words, for the report
    epochs: int = 0  # training passes over the fine-tuning photos
    fraction: float | None = None  # channels: share of channels removed
    student_size: tuple[int, int] | None = None  # student: (height, width)


@dataclasses.dataclass(frozen=True)
class TuneRequirements:
    """What a tuned bundle must meet (latency, memory and size budgets, top-1 drop); None: no such limit.

    A profile's :class:`~tillsight.profiles.Budgets` say the same with 0 for "no limit"; this is what a search
    checks, after the overrides given to ``tune``.
    """

    max_latency_ms: float | None
    max_memory_bytes: int | None
    max_model_bytes: int | None
    max_top1_drop: float

    @classmethod
    def from_profile(
        cls, profile: Profile, max_latency_ms: float | None = None, max_top1_drop: float | None = None
    ) -> TuneRequirements:
        """The profile's ``[budgets]`` and ``max_top1_drop``, with these overrides.

        Raises:
            OptionsError: A negative override.
        """
        if (max_latency_ms is not None and max_latency_ms <= 0) or (max_top1_drop is not None and max_top1_drop < 0):
            raise OptionsError("--max-latency-ms must be positive and --max-drop 0 or more")
        budgets = profile.budgets
        return cls(
            max_latency_ms if max_latency_ms is not None else (budgets.max_latency_ms or None),
            budgets.max_memory_bytes or None,
            budgets.max_model_bytes or None,
            profile.max_top1_drop if max_top1_drop is None else max_top1_drop,
        )

    @property
    def has_resource_budget(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_memory_bytes, self.max_model_bytes))

    def misses(self, latency_ms: float, memory_bytes: int, model_bytes: int) -> list[str]:
        """The resource budgets these figures miss, in words (``latency 10.04 ms > 9.00 ms``)."""
        from ..benchmarking import budget_checks

        limits = {
            "max_latency_ms": self.max_latency_ms,
            "max_memory_bytes": self.max_memory_bytes,
            "max_model_bytes": self.max_model_bytes,
        }
        figures = {
            "max_latency_ms": (latency_ms, "classify p50"),
            "max_memory_bytes": (memory_bytes, "peak RSS"),
            "max_model_bytes": (model_bytes, "model file"),
        }
        return [check.shortfall() for check in budget_checks(limits, figures) if not check.within]


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """How ``tillsight tune`` searches: the budget overrides, the time it may take, where it measures, the space.

    Attributes:
        max_latency_ms: Overrides the profile's latency budget (``classify()`` p50).
        max_top1_drop: Overrides the profile's accuracy tolerance (points of top-1).
        time_budget_s: Wall time for the whole search; candidates that cannot finish in what is left are skipped.
        bench_command: A shell command that receives each bundle as a tar on stdin and prints
            ``tillsight benchmark --json`` output; None: measure on this host.
        frames: Timed runs per latency measurement.
        epochs: Training epochs of every training candidate; None: the profile's (QAT, pruning).
        channel_fractions: The channel-pruning candidates (shares of channels removed), in order.
        student_scales: The student candidates (input side as a share of the model's), in order.
        stop_early: Stop at the first candidate that fits; False: try the rest too (time budget
            allowing) and keep the most accurate that fits.
    """

    max_latency_ms: float | None = None
    max_top1_drop: float | None = None
    time_budget_s: float = 45 * 60
    bench_command: str | None = None
    frames: int = 50
    epochs: int | None = None
    channel_fractions: tuple[float, ...] = CHANNEL_FRACTIONS
    student_scales: tuple[float, ...] = STUDENT_SCALES
    stop_early: bool = True

    def __post_init__(self) -> None:
        if self.time_budget_s <= 0 or self.frames < 1 or (self.epochs is not None and self.epochs < 1):
            raise OptionsError("--time-budget must be positive, --frames and --epochs at least 1")
        if any(not 0 < f < 1 for f in self.channel_fractions) or any(not 0 < s <= 1 for s in self.student_scales):
            raise OptionsError("channel fractions must be between 0 and 1, student scales above 0 and at most 1")


class CandidateStatus(str, enum.Enum):
    """What became of a candidate: converted and measured, skipped without converting, or failed with its reason."""

    MEASURED = "measured"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """What became of one candidate."""

    candidate: Candidate
    status: CandidateStatus
    note: str  # the budget verdict, or why it was skipped or failed
    seconds: float = 0.0
    bundle: str | None = None
    top1: float | None = None
    top1_drop: float | None = None  # from the original float model
    latency_ms: float | None = None  # classify() p50 where measured
    memory_bytes: int | None = None
    model_bytes: int | None = None
    meets_budget: bool = False  # every resource budget, and the drop tolerance
    resource_misses: tuple[str, ...] = ()  # the latency, memory and size budgets it misses
    drop_misses: bool = False  # it loses more top-1 than the tolerance

    @property
    def verdict(self) -> str:
        """The note, prefixed with the status when the candidate was not measured."""
        return self.note if self.status is CandidateStatus.MEASURED else f"{self.status.value}: {self.note}"


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """The search, its candidates in the order tried, and the winner (None: none met the budget)."""

    profile: str
    budget: TuneRequirements
    measured_on: str  # where latency was measured
    float_top1: float | None
    results: tuple[CandidateResult, ...]
    winner: CandidateResult | None
    winner_path: Path | None
    seconds: float
    time_budget_s: float


@dataclasses.dataclass(frozen=True)
class TuneRecord:
    """What ``tune.json`` holds (its JSON Schema: ``tillsight/schemas/tune.schema.json``)."""

    profile: str
    budget: TuneRequirements
    measured_on: str  # where latency was measured
    float_top1: float | None
    seconds: float
    time_budget_s: float
    winner: str | None  # the winning candidate's name
    winner_path: str | None
    candidates: tuple[CandidateResult, ...]  # in the order tried
    pareto: tuple[str, ...] = ()  # the measured candidates on the top-1 / latency front


def read_tune_record(path: str | Path) -> TuneRecord:
    """Read a ``tune.json``.

    Raises:
        DataError: Unreadable, not JSON, or not a tune record.
    """
    import msgspec

    path = Path(path)
    try:
        return msgspec.json.decode(path.read_bytes(), type=TuneRecord)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except msgspec.DecodeError as exc:  # ValidationError is one
        raise DataError(f"{path} is not a tune record ({exc}); write it again with 'tillsight tune'") from exc


def search_space(
    input_size: tuple[int, int],
    qat_epochs: int,
    finetune_epochs: int | None,
    student_epochs: int,
    channel_fractions: Sequence[float] = CHANNEL_FRACTIONS,
    student_scales: Sequence[float] = STUDENT_SCALES,
) -> list[Candidate]:
    """The candidates in the order they are tried (of cost); channel ones train ``finetune_epochs``, else their cut's default."""
    candidates = [
        Candidate("int8", CandidateKind.INT8, "post-training int8"),
        Candidate("qat", CandidateKind.QAT, f"quantization-aware fine-tuning ({qat_epochs} epochs), int8", epochs=qat_epochs),
    ]
    for fraction in channel_fractions:
        epochs = finetune_epochs or default_finetune_epochs(PruningMode.CHANNELS, fraction)
        candidates.append(
            Candidate(
                f"channels-{fraction:g}",
                CandidateKind.CHANNELS,
                f"{fraction:.0%} of channels pruned, fine-tuned {epochs} epochs with distillation, int8",
                epochs=epochs,
                fraction=fraction,
            )
        )
    for scale in student_scales:
        size = tuple(max(32, int(round(side * scale / 8)) * 8) for side in input_size)
        candidates.append(
            Candidate(
                f"student-{size[0]}",
                CandidateKind.STUDENT,
                f"{STUDENT} (ImageNet-pretrained) at {size[0]}x{size[1]} distilled {student_epochs} epochs, int8",
                epochs=student_epochs,
                student_size=size,  # type: ignore[arg-type]
            )
        )
    return candidates
