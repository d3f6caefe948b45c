"""The tune section of RESULTS.md: ``tillsight tune`` on the sample model for raspberry-pi-4, under latency budgets.

    python bench/tune.py --data ../shared/data/grocery-store [--max-latency-ms 9] [--max-drop 5] [--out out/tune-pi4]
    python bench/tune.py --from out/tune-9ms out/tune-3.2ms      # only render searches already run, in this order

Runs (about 30 minutes on 2 cores)::

    tillsight tune out/grocery/grocery_efficientnet_lite0.keras --profile raspberry-pi-4 \\
        --calibration DATA/train.txt --eval DATA/val.txt --finetune DATA/train.txt --labels out/grocery/labels.txt \\
        --crop 0.875 --out out/tune-pi4 --max-latency-ms 9 --max-drop 5 --frames 100 --time-budget 45m

then writes ``bench/TUNE.md`` from each search's ``tune.json`` (one subsection and chart,
``bench/plots/tune-<budget>ms.png``, per search) and puts it into ``bench/RESULTS.md``
(``render_results.py`` keeps it). A budget that post-training int8 meets shows the search stop at
once; one it misses shows which compressed candidate wins. The sample model comes from
``samples/train_grocery_classifier.py``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from sections import SECTION_FILES, publish

from tillsight.converters.tune_space import CandidateStatus, TuneRecord, read_tune_record

HEADING = "## tillsight tune"


def render(record: TuneRecord, command: str, plot: str) -> str:
    """One search: its budget, command, every candidate and the winner, and its chart at ``plot``."""
    budget = record.budget
    lines = [
        f"### classify() p50 <= {budget.max_latency_ms or 0:g} ms",
        "",
        f"Budget: classify() p50 <= {budget.max_latency_ms or 0:g} ms ({_int8_against(record)}), top-1 drop <= "
        f"{budget.max_top1_drop:g} points from the float model ({record.float_top1 or 0:.2f}% on the val photos), the profile's "
        f"memory ({(budget.max_memory_bytes or 0) / 1e6:.0f} MB) and size ({(budget.max_model_bytes or 0) / 1e6:.0f} MB) "
        f"budgets. Latency measured on {record.measured_on}, 100 timed runs each. "
        f"Search: {record.seconds / 60:.1f} of {record.time_budget_s / 60:.0f} minutes.",
        f"Command: `{command}`.",
        "",
        "| candidate | recipe | top-1 | drop | classify p50 ms | model MB | time s | Pareto | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | :---: | --- |",
    ]
    for c in record.candidates:
        measured = c.status is CandidateStatus.MEASURED
        verdict = c.verdict
        if c.candidate.name == record.winner:
            verdict = f"**winner**: {verdict}"
        figures = (
            [
                f"{c.top1 or 0:.2f}%",
                f"{c.top1_drop or 0:.2f}",
                f"{c.latency_ms or 0:.2f}",
                f"{(c.model_bytes or 0) / 1e6:.2f}",
                f"{c.seconds:.0f}",
            ]
            if measured
            else [""] * 5
        )
        pareto = "yes" if c.candidate.name in record.pareto else ""
        cells = [c.candidate.name, c.candidate.recipe, *figures, pareto, verdict]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Winner: {record.winner or 'none'}."
        + ("" if record.winner else " No candidate met the budget within the drop tolerance.")
        + " The chart draws the measured candidates (skipped ones have no figures)."
    )
    lines += ["", f"![tune: top-1 vs latency, marker area by model size]({plot})"]
    return "\n".join(lines) + "\n"


def section(searches: list[str]) -> str:
    """The RESULTS.md section holding the rendered searches."""
    title = f"{HEADING} (raspberry-pi-4 profile, the sample model, latency measured on this host)"
    return "\n".join([title, "", *searches])


def _int8_against(record: TuneRecord) -> str:
    """Whether post-training int8 met the latency budget in this search (what makes the other candidates needed)."""
    int8 = next((c for c in record.candidates if c.candidate.name == "int8" and c.latency_ms is not None), None)
    if int8 is None or not record.budget.max_latency_ms:
        return "post-training int8 not measured"
    return f"post-training int8 {'misses' if int8.latency_ms > record.budget.max_latency_ms else 'meets'} it here"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/grocery-store"))
    parser.add_argument("--model", type=Path, default=Path("out/grocery/grocery_efficientnet_lite0.keras"))
    parser.add_argument("--labels", type=Path, default=Path("out/grocery/labels.txt"))
    parser.add_argument("--out", type=Path, default=Path("out/tune-pi4"))
    parser.add_argument("--max-latency-ms", type=float, default=9.0)
    parser.add_argument("--max-drop", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, help="epochs of every training candidate (default: each recipe's own)")
    parser.add_argument(
        "--from", dest="existing", type=Path, nargs="+", help="render these finished searches instead of running one"
    )
    args = parser.parse_args()
    if args.existing is None:
        if not args.model.is_file():
            print(f"no sample model at {args.model}: run samples/train_grocery_classifier.py first", file=sys.stderr)
            return 1
        shutil.rmtree(args.out, ignore_errors=True)
        subprocess.run(_command(args, args.out, args.max_latency_ms, args.max_drop), check=False)
    plots = SECTION_FILES[1].parent / "plots"
    searches = []
    for searched in args.existing or [args.out]:
        record = read_tune_record(searched / "tune.json")
        plot = f"tune-{record.budget.max_latency_ms or 0:g}ms.png"
        if (searched / "tune.png").is_file():
            shutil.copyfile(searched / "tune.png", plots / plot)
        command = _command(args, searched, record.budget.max_latency_ms or 0, record.budget.max_top1_drop)
        searches.append(render(record, " ".join(command), f"plots/{plot}"))
    text = section(searches)
    publish(text, SECTION_FILES[1])
    print(text)
    return 0


def _command(args: argparse.Namespace, out: Path, max_latency_ms: float, max_drop: float) -> list[str]:
    """The ``tillsight tune`` command line of a search into ``out``."""
    return [
        "tillsight",
        "tune",
        str(args.model),
        "--profile",
        "raspberry-pi-4",
        "--calibration",
        str(args.data / "train.txt"),
        "--eval",
        str(args.data / "val.txt"),
        "--finetune",
        str(args.data / "train.txt"),
        "--labels",
        str(args.labels),
        "--crop",
        "0.875",
        "--out",
        str(out),
        "--max-latency-ms",
        f"{max_latency_ms:g}",
        "--max-drop",
        f"{max_drop:g}",
        *(["--epochs", str(args.epochs)] if args.epochs else []),
        "--frames",
        "100",
        "--time-budget",
        "45m",
    ]


if __name__ == "__main__":
    sys.exit(main())
