"""The on-device acceptance check: a kiosk proves a new bundle here before it swaps it in.

1. **Conformance.** The bundle's conformance set (:mod:`tillsight.conformance`) must give the
   converting host's top-1 on at least ``required_agreement`` percent of its inputs: this
   catches a wrong runtime, delegate or library version.
2. **Budgets.** ``tillsight benchmark`` in a fresh process, as an operator would run it: the
   profile's latency and memory budgets must hold on this device.
3. **Local photos** (optional). Labeled photos from the kiosk's own camera must keep at least
   ``min_local_top1`` percent top-1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from msgspec.structs import replace

from ..benchmarking import benchmark
from ..classifier import Classifier
from ..conformance import check_conformance
from ..errors import OptionsError, TillsightError
from ..validation import validate
from .messages import AcceptanceFigures

__all__ = ["AcceptanceOptions", "accept"]


@dataclasses.dataclass(frozen=True)
class AcceptanceOptions:
    """What a kiosk requires of a bundle before taking it.

    Attributes:
        required_agreement: Percent of the conformance set whose top-1 must match the host's.
        benchmark_frames: Timed runs of the budget check (0: skip the budget check).
        local_photos: A labeled class folder or list file of this kiosk's own photos (None: none).
        min_local_top1: The top-1 percent those photos must keep.
    """

    required_agreement: float = 99.0
    benchmark_frames: int = 50
    local_photos: Path | None = None
    min_local_top1: float = 80.0

    def __post_init__(self) -> None:
        if not 0.0 < self.required_agreement <= 100.0:
            raise OptionsError(f"required conformance agreement must be in (0, 100] percent, got {self.required_agreement}")
        if self.benchmark_frames < 0:
            raise OptionsError(f"benchmark frames must be 0 or more, got {self.benchmark_frames}")
        if self.local_photos is not None and not Path(self.local_photos).exists():
            raise OptionsError(f"local acceptance photos {self.local_photos} do not exist; pass a class folder or list file")


def accept(candidate: Classifier, options: AcceptanceOptions) -> AcceptanceFigures:
    """Run the acceptance checks on a loaded candidate bundle; cheap checks first, stop at the first failure.

    Args:
        candidate: The new bundle, loaded here (its ``bundle`` set).
        options: What is required.

    Returns:
        The figures, with ``passed`` and, when it failed, the ``reason`` in one line. Nothing is raised
        for a bundle that fails: a refused bundle is an outcome, reported to the fleet.
    """
    bundle = candidate.bundle
    if bundle is None:
        raise OptionsError("the acceptance check needs a classifier loaded from a bundle")
    figures = AcceptanceFigures(conformance_inputs=0, conformance_agreement=0.0, required_agreement=0.0, p50_ms=0.0, p95_ms=0.0)
    try:
        conformance = check_conformance(candidate)
    except TillsightError as exc:
        return _failed(figures, str(exc))
    figures = replace(
        figures,
        conformance_inputs=conformance.inputs,
        conformance_agreement=conformance.agreement,
        required_agreement=options.required_agreement,
    )
    if conformance.agreement < options.required_agreement:
        return _failed(
            figures,
            f"conformance: this kiosk reproduces the converting host's top-1 on {conformance.agreement:.1f}% of "
            f"{conformance.inputs} inputs, {options.required_agreement:.1f}% required: check the runtime, delegate and "
            "library versions on this kiosk",
        )
    if options.benchmark_frames:
        try:
            report = benchmark([bundle.path], frames=options.benchmark_frames)
        except TillsightError as exc:
            return _failed(figures, f"benchmark: {exc}")
        measured = report.results[0]
        latency_budget = next((check.limit for check in measured.budgets if check.name == "max_latency_ms"), None)
        figures = replace(
            figures, p50_ms=measured.classify.p50_ms, p95_ms=measured.classify.p95_ms, latency_budget_ms=latency_budget
        )
        if measured.over_budget:
            return _failed(figures, f"budgets: {measured.over_budget[0].describe(measured.profile, 'this kiosk')}")
    if options.local_photos is not None:
        try:
            local = validate(bundle.path, options.local_photos)
        except TillsightError as exc:
            return _failed(figures, f"local photos: {exc}")
        figures = replace(figures, local_photos=local.images, local_top1=local.top1, required_local_top1=options.min_local_top1)
        if local.top1 < options.min_local_top1:
            return _failed(
                figures,
                f"local photos: top-1 {local.top1:.1f}% on {local.images} photos of this kiosk, "
                f"{options.min_local_top1:.1f}% required",
            )
    return replace(figures, passed=True)


def _failed(figures: AcceptanceFigures, reason: str) -> AcceptanceFigures:
    return replace(figures, passed=False, reason=reason)
