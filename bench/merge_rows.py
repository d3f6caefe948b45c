"""Merge rows of a later ``run_benchmarks.py`` run (e.g. only ``--no-pruning --qat-epochs 1``) into a full run's results.

    python bench/merge_rows.py FULL/results.json LATER/results.json --rows qat student
    python bench/merge_rows.py bench/results.json LATER/results.json --rows pruning:unstructured   # one pruning row

The later run's rows replace the full run's; its arguments, date and run time are recorded in
``later_runs``, which RESULTS.md names under its header. An earlier later run no longer names the
rows this one replaces (and is dropped when none are left), so the header says where each row
comes from. RESULTS.md is rendered again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
from render_results import render_markdown
from results_schema import BenchResults, LaterRun, load_results, results_json

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", type=Path)
    parser.add_argument("later", type=Path)
    parser.add_argument(
        "--rows",
        nargs="+",
        required=True,
        help="top-level keys of results.json to take from the later run; pruning:NAME for one pruning row",
    )
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    full, later = load_results(args.full), load_results(args.later)
    same_model = (HERE.parent / later.model).resolve() == (HERE.parent / full.model).resolve()  # relative: to the repo
    if later.host != full.host or not same_model:
        raise SystemExit("the later run is of another host or model: its rows do not compare")
    names = [row.split(":")[0] for row in args.rows]
    unknown = [name for name in names if name not in BenchResults.__struct_fields__]
    if unknown:
        raise SystemExit(f"--rows: no such rows {unknown}; results.json has {', '.join(BenchResults.__struct_fields__)}")
    merged = full
    for row in args.rows:
        merged = msgspec.structs.replace(merged, **{row.split(":")[0]: _taken(merged, later, row)})
    later_run = LaterRun(rows=args.rows, date=later.date, wall_time_s=later.wall_time_s, arguments=later.arguments)
    merged = msgspec.structs.replace(merged, later_runs=_still_holding([*full.later_runs, later_run]))
    args.full.write_text(results_json(merged))
    args.results_md.write_text(render_markdown(merged))


def _still_holding(runs: list[LaterRun]) -> list[LaterRun]:
    """``runs`` (oldest first), each naming only the rows no later run replaced (``pruning`` replaces every ``pruning:NAME``)."""
    kept: list[LaterRun] = []
    replaced: set[str] = set()
    for run in reversed(runs):
        rows = [row for row in run.rows if row not in replaced and row.split(":")[0] not in replaced]
        replaced.update(run.rows)
        if rows:
            kept.insert(0, msgspec.structs.replace(run, rows=rows))
    return kept


def _taken(full: BenchResults, later: BenchResults, row: str) -> object:
    """The later run's value of ``row``; ``pruning:NAME`` takes only that pruning row, in its place among the full run's."""
    if ":" not in row:
        return getattr(later, row)
    name = row.split(":", 1)[1]
    replacement = next((r for r in later.pruning if r.name == name), None)
    if replacement is None or all(r.name != name for r in full.pruning):
        raise SystemExit(f"--rows {row}: both runs need a pruning row named {name!r}")
    return [replacement if r.name == name else r for r in full.pruning]


if __name__ == "__main__":
    main()
