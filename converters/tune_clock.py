"""What a ``tillsight tune`` candidate costs, and whether it is still worth starting (:func:`skip_reason`).

:class:`Clock` holds the search's time budget and learns the cost of training as candidates finish;
:mod:`.tune` asks :func:`skip_reason` before building each candidate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..conversion_options import ConversionOptions
from .tune_space import Candidate, CandidateKind, CandidateResult, CandidateStatus

__all__ = ["TRAINING_PASSES", "Clock", "forward_seconds", "skip_reason"]

#: A training step costs about this many inference passes (forward, backward, update).
TRAINING_PASSES = 3.0


class Clock:
    """The time budget, and the estimates that decide whether a candidate can still start.

    A candidate costs what int8 cost (conversion, evaluation, measurement) plus its training:
    the teacher once per fine-tuning photo and view (distillation), then ``epochs`` passes of
    training steps, each about :data:`TRAINING_PASSES` forward passes of the model, scaled by the
    student's pixel count. The forward pass is timed on the model itself before the search;
    after each training candidate the measured time per photo and epoch replaces the guess.
    """

    def __init__(self, budget_s: float, finetune_images: int, forward_s: float, base_s: float = 0.0):
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.finetune_images = finetune_images
        self.forward_s = forward_s  # one photo through the float model, batched
        self.base_s = base_s  # convert + evaluate + measure, from int8
        self.step_s = TRAINING_PASSES * forward_s  # one photo through one training step

    def elapsed(self) -> float:
        """Seconds since the search started."""
        return time.monotonic() - self.started

    def learn_training(self, candidate: Candidate, seconds: float, input_size: tuple[int, int]) -> None:
        """After a training candidate took ``seconds``: its measured time per photo and epoch replaces the guess."""
        trained = seconds - self.base_s - self._teacher_s(candidate)
        if candidate.epochs and trained > 0:
            self.step_s = trained / (candidate.epochs * self.finetune_images * self._pixels(candidate, input_size))

    def estimate(self, candidate: Candidate, input_size: tuple[int, int]) -> float:
        """Seconds ``candidate`` is expected to take."""
        steps = candidate.epochs * self.finetune_images * self.step_s * self._pixels(candidate, input_size)
        return self.base_s + self._teacher_s(candidate) + steps

    def _teacher_s(self, candidate: Candidate) -> float:
        distilled = candidate.kind in (CandidateKind.CHANNELS, CandidateKind.STUDENT)
        return 2 * self.finetune_images * self.forward_s if distilled else 0.0

    @staticmethod
    def _pixels(candidate: Candidate, input_size: tuple[int, int]) -> float:
        if candidate.student_size is None or not all(input_size):
            return 1.0
        return (candidate.student_size[0] * candidate.student_size[1]) / (input_size[0] * input_size[1])


def forward_seconds(model: str | Path, options: ConversionOptions, input_size: tuple[int, int], batch: int = 16) -> float:
    """Seconds one photo takes through the float model in a batch (timed after a warm-up)."""
    import numpy as np

    from .source import load_source_model

    source = load_source_model(model, options.allow_unsafe_model)
    images = np.random.default_rng(0).uniform(0, 255, (batch, *input_size, 3)).astype(np.float32)
    source.predict(images[:2])
    started = time.perf_counter()
    source.predict(images)
    return (time.perf_counter() - started) / batch


def skip_reason(
    candidate: Candidate,
    results: Sequence[CandidateResult],
    winner: CandidateResult | None,
    clock: Clock,
    input_size: tuple[int, int],
) -> str:
    """Why ``candidate`` is not worth its time, or "" to try it."""
    if winner is not None:
        return f"{winner.candidate.name} already meets the budget within the drop tolerance"
    int8 = results[0]
    if candidate.kind is CandidateKind.QAT and int8.resource_misses:
        return f"same int8 graph as int8, which misses {'; '.join(int8.resource_misses)}"
    milder = [r for r in results if r.candidate.kind is candidate.kind and r.status is CandidateStatus.MEASURED]
    if candidate.kind in (CandidateKind.CHANNELS, CandidateKind.STUDENT) and milder and milder[-1].drop_misses:
        return f"compresses more than {milder[-1].candidate.name}, which already loses {milder[-1].top1_drop:.2f} points"
    left = clock.budget_s - clock.elapsed()
    needed = clock.estimate(candidate, input_size)
    if needed > left:
        return f"needs about {needed / 60:.1f} min, {max(0.0, left) / 60:.1f} min of the time budget left"
    return ""
