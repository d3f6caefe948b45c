"""Sections of RESULTS.md measured apart from run_benchmarks.py (multi-lane, tune, hot swap, drift, fleet), kept before its targets."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
#: Section files, in the order render_results.py puts them before the targets.
SECTION_FILES = (HERE / "LANES.md", HERE / "TUNE.md", HERE / "HOT_SWAP.md", HERE / "DRIFT.md", HERE / "FLEET.md")


def splice(results_md: str, section: str) -> str:
    """``results_md`` with the section of ``section``'s heading replaced by it (or put before the targets)."""
    heading = section.splitlines()[0].split("(")[0].rstrip()
    lines = results_md.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        return "".join(lines[:start]) + section + "\n" + "".join(lines[end:])
    targets = next((i for i, line in enumerate(lines) if line.startswith("## Targets")), len(lines))
    return "".join(lines[:targets]) + section + "\n" + "".join(lines[targets:])


def publish(section: str, section_file: Path) -> None:
    """Keep ``section`` in its file (for render_results.py) and put it into RESULTS.md now."""
    section_file.write_text(section, encoding="utf-8")
    RESULTS_MD.write_text(splice(RESULTS_MD.read_text(encoding="utf-8"), section), encoding="utf-8")
