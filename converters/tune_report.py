"""``tune.md``, ``tune.png`` and ``tune.json``: every candidate of a ``tillsight tune`` search, its Pareto front and the winner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..jsonfile import write_json_file
from ..report import plot_accuracy_latency
from ..staging import staged_file
from .tune_space import CandidateStatus, TuneRecord

if TYPE_CHECKING:
    from .tune_space import CandidateResult, TuneResult

__all__ = ["pareto_front", "summary_line", "tune_record", "write_report"]


def pareto_front(results: Sequence[CandidateResult]) -> set[str]:
    """Names of the measured candidates no other is both more accurate and faster than (the top-1 / latency front)."""
    measured = [r for r in results if r.status is CandidateStatus.MEASURED and r.top1 is not None and r.latency_ms is not None]
    front = set()
    for r in measured:
        dominated = any(
            o.top1 >= r.top1 and o.latency_ms <= r.latency_ms and (o.top1 > r.top1 or o.latency_ms < r.latency_ms)  # type: ignore[operator]
            for o in measured
        )
        if not dominated:
            front.add(r.candidate.name)
    return front


def _budget_text(result: TuneResult) -> str:
    budget = result.budget
    parts = []
    if budget.max_latency_ms is not None:
        parts.append(f"latency (classify p50) <= {budget.max_latency_ms:g} ms")
    if budget.max_memory_bytes is not None:
        parts.append(f"peak memory <= {budget.max_memory_bytes / 1e6:.0f} MB")
    if budget.max_model_bytes is not None:
        parts.append(f"model <= {budget.max_model_bytes / 1e6:.2f} MB")
    parts.append(f"top-1 drop <= {budget.max_top1_drop:g} points from the float model")
    return ", ".join(parts)


def _number(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def summary_line(result: TuneResult) -> str:
    """One line: the winner with its figures, or that none met the budget; candidates and time."""
    counts = {status.value: sum(r.status is status for r in result.results) for status in CandidateStatus}
    tally = (
        f"{counts['measured']} measured, {counts['skipped']} skipped, {counts['failed']} failed in {result.seconds / 60:.1f} min"
    )
    if result.winner is None:
        return f"no candidate met the budget ({tally}); see tune.md for the closest"
    w = result.winner
    return (
        f"winner {w.candidate.name}: top-1 {w.top1:.2f}% (drop {w.top1_drop:.2f}), classify p50 {w.latency_ms:.2f} ms on "
        f"{result.measured_on}, {w.model_bytes / 1e6:.2f} MB -> {result.winner_path} ({tally})"
    )


def tune_record(result: TuneResult) -> TuneRecord:
    """The search as ``tune.json`` records it."""
    return TuneRecord(
        profile=result.profile,
        budget=result.budget,
        measured_on=result.measured_on,
        float_top1=result.float_top1,
        seconds=result.seconds,
        time_budget_s=result.time_budget_s,
        winner=result.winner.candidate.name if result.winner else None,
        winner_path=str(result.winner_path) if result.winner_path else None,
        candidates=result.results,
        pareto=tuple(sorted(pareto_front(result.results))),
    )


def write_report(result: TuneResult, out: Path) -> tuple[Path, Path | None]:
    """Write ``out/tune.md``, ``out/tune.json`` and ``out/tune.png`` (no chart when nothing was measured)."""
    write_json_file(out / "tune.json", tune_record(result))
    front = pareto_front(result.results)
    points = [
        (r.candidate.name, r.latency_ms, r.top1, r.model_bytes or 0)
        for r in result.results
        if r.status is CandidateStatus.MEASURED and r.latency_ms is not None and r.top1 is not None
    ]
    png = plot_accuracy_latency(points, out / "tune.png", title=f"tune {result.profile}: top-1 vs latency") if points else None
    lines = [
        f"# tillsight tune: {result.profile}",
        "",
        f"TuneRequirements: {_budget_text(result)}.",
        f"Latency measured on {result.measured_on}. Float model top-1: {_number(result.float_top1, '.2f')}% on the evaluation photos.",
        f"Time: {result.seconds / 60:.1f} of {result.time_budget_s / 60:.0f} minutes.",
        "",
        f"**{summary_line(result)}**",
        "",
        "| candidate | recipe | top-1 % | drop | classify p50 ms | peak MB | model MB | time s | Pareto | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: | --- |",
    ]
    for r in result.results:
        verdict = r.verdict
        if result.winner is not None and r.candidate.name == result.winner.candidate.name:
            verdict = f"**winner**, {verdict}"
        lines.append(
            f"| {r.candidate.name} | {r.candidate.recipe} | {_number(r.top1, '.2f')} | {_number(r.top1_drop, '.2f')} | "
            f"{_number(r.latency_ms, '.2f')} | {_number(r.memory_bytes and r.memory_bytes / 1e6, '.0f')} | "
            f"{_number(r.model_bytes and r.model_bytes / 1e6, '.2f')} | {_number(r.seconds or None, '.0f')} | "
            f"{'yes' if r.candidate.name in front else ''} | {verdict} |"
        )
    lines += ["", "Candidate bundles: `candidates/<name>/`. Marker area in the chart is the model size."]
    if png is not None:
        lines += ["", "![top-1 vs latency](tune.png)"]
    markdown = out / "tune.md"
    with staged_file(markdown) as temporary:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return markdown, png
