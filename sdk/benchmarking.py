"""``tillsight benchmark`` and :func:`tillsight.benchmark`: measure bundles where they run, and check them against their profile's budgets.

Each bundle runs in a fresh process (:mod:`tillsight._benchmark_worker`), as a kiosk app would start:

- cold start: from process start to the first classified frame (imports, loading, the first inference);
- latency at the profile's threads (or ``threads``), p50/p95/p99 over ``frames`` runs, twice:
  ``classify()`` on a camera-sized frame (preprocessing and top-k included) and the bare inference
  on a prepared tensor;
- peak RSS of that process;
- the engine actually used, with the reason when the backend fell back (e.g. Edge TPU -> CPU).

The host is described by :mod:`tillsight.host`; the results are a typed, versioned JSON
document (:class:`BenchmarkReport`) that ``tillsight report`` reads to show device figures instead of
the conversion host's. No TensorFlow here: this runs on the device.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from . import errors as _errors
from ._benchmark_worker import WorkerReport
from .bundle import read_bundle
from .bundle_metrics import LatencyStats
from .errors import BudgetError, DataError, OptionsError, SourceError, TillsightError
from .host import HostInfo, package_versions
from .jsonfile import json_ready, write_json_file
from .profiles import Budgets

__all__ = [
    "DEFAULT_FRAMES",
    "BudgetCheck",
    "BundleBenchmark",
    "BenchmarkReport",
    "benchmark",
    "bundle_from_tar",
    "read_benchmark",
]

#: Timed runs of each measurement when not told otherwise.
DEFAULT_FRAMES = 100
FORMAT_NAME = "tillsight-benchmark"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BudgetCheck:
    """One of the profile's budgets against what was measured here."""

    name: str  # the profile key: max_latency_ms, max_memory_bytes, max_model_bytes
    limit: float
    measured: float
    what: str  # what was compared, e.g. "classify p50"

    @property
    def within(self) -> bool:
        return self.measured <= self.limit

    def describe(self, profile: str, host: str) -> str:
        """One line naming the budget, the measured figure and the profile."""
        verdict = "within" if self.within else "over"
        return (
            f"{self.what} {_in_unit(self.name, self.measured)} is {verdict} profile '{profile}' budget "
            f"{self.name} = {_in_unit(self.name, self.limit)}, measured on {host}"
        )

    def shortfall(self) -> str:
        """The comparison in a few words: ``latency 10.04 ms > 9 ms``."""
        sign = "<=" if self.within else ">"
        return f"{_BUDGET_WORDS.get(self.name, self.name)} {_in_unit(self.name, self.measured, 2)} {sign} {_in_unit(self.name, self.limit, 2)}"


#: What each budget limits, in a word.
_BUDGET_WORDS = {"max_latency_ms": "latency", "max_memory_bytes": "memory", "max_model_bytes": "size"}


def budget_checks(limits: Mapping[str, float | None], measured: Mapping[str, tuple[float, str]]) -> tuple[BudgetCheck, ...]:
    """Every budget that is set (a limit above 0) against its measured figure: the one comparison behind
    ``tillsight benchmark``, a conversion's size check and ``tillsight tune``'s verdicts.

    Args:
        limits: Budget name (``max_latency_ms``, ``max_memory_bytes``, ``max_model_bytes``) to its limit; 0 or None: none.
        measured: Budget name to the measured figure and what it is (``"classify p50"``).
    """
    return tuple(
        BudgetCheck(name, float(limit), float(measured[name][0]), measured[name][1])
        for name, limit in limits.items()
        if limit and name in measured
    )


def _in_unit(name: str, value: float, digits: int = 1) -> str:
    """A budget's figure in its unit: ``63.2 ms``, ``81.0 MB``."""
    return f"{value:.{digits}f} ms" if name.endswith("_ms") else f"{value / 1e6:.{digits}f} MB"


@dataclasses.dataclass(frozen=True)
class BundleBenchmark:
    """One bundle measured in its own process."""

    bundle: str  # the folder, as given
    profile: str
    backend: str
    model_sha256: str  # matches the bundle wherever it is copied (report looks results up by it)
    engine: str
    fallback_reason: str | None
    threads: int | None
    source: str  # what was classified
    cold_start_s: float
    peak_rss_bytes: int
    classify: LatencyStats  # classify() on the frame: preprocessing, inference, top-k
    invoke: LatencyStats  # inference alone on a prepared tensor
    budgets: tuple[BudgetCheck, ...] = ()

    @property
    def over_budget(self) -> tuple[BudgetCheck, ...]:
        return tuple(check for check in self.budgets if not check.within)


@dataclasses.dataclass(frozen=True)
class BenchmarkReport:
    """What ``tillsight benchmark`` writes: the host, the package versions, one result per bundle."""

    host: HostInfo
    versions: dict[str, str]
    created: str
    results: tuple[BundleBenchmark, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (:data:`SCHEMA` describes it)."""
        data: dict[str, Any] = json_ready(self)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> BenchmarkReport:
        """Validate a benchmark document.

        Raises:
            DataError: Not a tillsight benchmark, a newer format, or a malformed field.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise DataError(f"{where} is not a 'tillsight benchmark --json' file")
        if data.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{where} has benchmark format {data.get('format_version')!r}; this tillsight reads {FORMAT_VERSION}")
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise DataError(f"{where} is malformed: {exc}; write it again with 'tillsight benchmark --json'") from exc


def read_benchmark(path: str | Path) -> BenchmarkReport:
    """Read a ``tillsight benchmark --json`` file.

    Raises:
        DataError: Unreadable, not JSON, or not a valid benchmark document.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read benchmark file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not JSON ({exc.msg} at line {exc.lineno}); pass a 'tillsight benchmark --json' file") from exc
    return BenchmarkReport.from_dict(data, str(path))


def benchmark(
    bundles: Sequence[str | Path],
    frames: int = DEFAULT_FRAMES,
    threads: int | None = None,
    source: str | Path | None = None,
    max_latency_ms: float | None = None,
    max_memory_bytes: int | None = None,
    launcher: Sequence[str] = (),
) -> BenchmarkReport:
    """Measure each bundle in a fresh process on this machine.

    Args:
        bundles: Bundle folders.
        frames: Timed runs per measurement (after a few untimed ones).
        threads: CPU threads; the profile's by default.
        source: An image, or a video whose frames are classified in turn; default: a synthetic
            1280x720 camera frame.
        max_latency_ms: Overrides the profile's latency budget (compared with the ``classify()`` p50).
        max_memory_bytes: Overrides the profile's memory budget (compared with the peak RSS).
        launcher: A command the measuring process runs under, e.g. ``["taskset", "-c", "2"]`` to pin it
            to one core, or an emulator.

    Returns:
        The report; nothing is raised for an overrun (see :attr:`BundleBenchmark.over_budget`).

    Raises:
        OptionsError: ``frames`` or ``threads`` below 1.
        SourceError: The source is missing or unreadable.
        BundleError, BackendUnavailableError: A bundle cannot be read or run here.
    """
    if frames < 1:
        raise OptionsError(f"--frames must be at least 1 (timed runs per measurement), got {frames}")
    if threads is not None and threads < 1:
        raise OptionsError(f"--threads must be at least 1, got {threads}")
    if source is not None and not Path(source).is_file():
        raise SourceError(f"benchmark source {source} does not exist: pass an image or a video file")
    host = HostInfo.current()
    results = []
    for path in bundles:
        manifest = read_bundle(path, verify=False).manifest  # the measuring process verifies as it loads
        measured, cold_start_s = _run_worker(Path(path), frames, threads, source, launcher)
        budgets = _budget_checks(
            manifest.profile.budgets if manifest.profile else Budgets(), measured, max_latency_ms, max_memory_bytes
        )
        results.append(
            BundleBenchmark(
                bundle=str(path),
                profile=manifest.profile_name,
                backend=manifest.runtime.backend.value,
                model_sha256=manifest.model_sha256,
                engine=measured.engine,
                fallback_reason=measured.fallback_reason,
                threads=measured.threads,
                source=measured.source,
                cold_start_s=round(cold_start_s, 3),
                peak_rss_bytes=measured.peak_rss_bytes,
                classify=LatencyStats.from_seconds(measured.classify_s),
                invoke=LatencyStats.from_seconds(measured.invoke_s),
                budgets=budgets,
            )
        )
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return BenchmarkReport(host, package_versions(), created, tuple(results))


def bundle_from_tar(stream: IO[bytes], into: Path) -> Path:
    """Unpack a bundle sent as a tar into ``into``; return its folder.

    This is how a bundle reaches a device to be measured there:
    ``tar -C bundles -c raspberry-pi-4 | ssh kiosk-12 tillsight benchmark --json -``
    (``tillsight tune --bench-command`` sends each candidate so).

    Raises:
        DataError: Not a tar, a member that would land outside ``into``, or no bundle in it.
    """
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            archive.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"standard input is not a tar of a bundle ({exc}); send one with: tar -C FOLDER -c BUNDLE | ...") from exc
    manifests = sorted(into.glob("manifest.json")) or sorted(into.glob("*/manifest.json"))
    if not manifests:
        raise DataError("the tar on standard input holds no bundle (no manifest.json at its top or one folder down)")
    return manifests[0].parent


def format_table(report: BenchmarkReport) -> str:
    """The results as a fixed-width table, with the host and any fallback under it."""
    header = (
        "bundle",
        "engine",
        "threads",
        "cold start s",
        "classify p50/p95/p99 ms",
        "invoke p50/p95/p99 ms",
        "peak RSS MB",
        "budgets",
    )
    rows = [header]
    for r in report.results:
        budgets = (
            "; ".join(
                f"{c.name} {_in_unit(c.name, c.measured)} {'<=' if c.within else '>'} {_in_unit(c.name, c.limit)} "
                f"{'ok' if c.within else 'OVER'}"
                for c in r.budgets
            )
            or "none set"
        )
        rows.append(
            (
                r.bundle,
                r.engine,
                str(r.threads if r.threads is not None else "-"),
                f"{r.cold_start_s:.2f}",
                " / ".join(f"{v:.2f}" for v in (r.classify.p50_ms, r.classify.p95_ms, r.classify.p99_ms)),
                " / ".join(f"{v:.2f}" for v in (r.invoke.p50_ms, r.invoke.p95_ms, r.invoke.p99_ms)),
                f"{r.peak_rss_bytes / 1e6:.1f}",
                budgets,
            )
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    sources = sorted({r.source for r in report.results})
    runs = sorted({r.classify.runs for r in report.results})
    lines.append(f"host: {report.host.describe()}; source: {', '.join(sources)}; {', '.join(map(str, runs))} timed runs each")
    lines += [f"fallback in {r.bundle}: {r.fallback_reason}" for r in report.results if r.fallback_reason]
    return "\n".join(lines)


def write_benchmark(report: BenchmarkReport, path: str | Path) -> Path:
    """Write the report as JSON; the file appears only when complete."""
    return write_json_file(path, report.to_dict())


def raise_over_budget(report: BenchmarkReport) -> None:
    """Raises BudgetError naming the first budget a bundle is over, the figure and the profile."""
    for result in report.results:
        for check in result.over_budget:
            raise BudgetError(f"{result.bundle}: {check.describe(result.profile, report.host.describe())}")


def _budget_checks(
    budgets: Budgets, measured: WorkerReport, max_latency_ms: float | None, max_memory_bytes: int | None
) -> tuple[BudgetCheck, ...]:
    """The profile's latency and memory budgets (0: none) or the overrides, against the measured figures."""
    limits = {
        "max_latency_ms": max_latency_ms if max_latency_ms is not None else budgets.max_latency_ms,
        "max_memory_bytes": max_memory_bytes if max_memory_bytes is not None else budgets.max_memory_bytes,
    }
    figures = {
        "max_latency_ms": (LatencyStats.from_seconds(measured.classify_s).p50_ms, "classify p50"),
        "max_memory_bytes": (float(measured.peak_rss_bytes), "peak RSS"),
    }
    return budget_checks(limits, figures)


def _run_worker(
    bundle: Path, frames: int, threads: int | None, source: str | Path | None, launcher: Sequence[str]
) -> tuple[WorkerReport, float]:
    """Run the bundle in a fresh Python process (its last stdout line is the JSON of what it measured):
    what it measured, and the seconds from its start to its first result."""
    import subprocess  # here, not at the top: `import tillsight` stays quick for kiosk apps

    command = [*launcher, sys.executable, "-m", "tillsight._benchmark_worker", str(bundle), "--frames", str(frames)]
    if threads is not None:
        command += ["--threads", str(threads)]
    if source is not None:
        command += ["--source", str(source)]
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except OSError as exc:
        raise OptionsError(f"cannot start the benchmark process {command[0]}: {exc.strerror or exc}; check --launcher") from exc
    lines = done.stdout.strip().splitlines()
    try:
        measured = msgspec.json.decode(lines[-1], type=WorkerReport) if lines else None
    except msgspec.DecodeError:
        measured = None
    if measured is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TillsightError(f"the benchmark process for {bundle} failed (exit {done.returncode}): {last}")
    if measured.error:  # a TillsightError in the worker: the same class here, the same one line
        kind = getattr(_errors, measured.kind, TillsightError)
        raise (kind if isinstance(kind, type) and issubclass(kind, TillsightError) else TillsightError)(measured.error)
    return measured, measured.first_result_unix - started
