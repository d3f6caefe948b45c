"""``tillsight benchmark`` and :func:`tillsight.benchmark`: measure bundles where they run, and check them against their profile's budgets.

Each bundle runs in a fresh process (:mod:`tillsight._benchmark_worker`), as a kiosk app would start:

- cold start: from process start to the first classified frame (imports, loading, the first inference);
- latency at the profile's threads (or ``threads``), p50/p95/p99 over ``frames`` runs, twice:
  ``classify()`` on a camera-sized frame (preprocessing and top-k included) and the bare inference
  on a prepared tensor;
- peak RSS of that process;
- the engine actually used, with the reason when the backend fell back (e.g. Edge TPU -> CPU).

The host is described from ``/proc/cpuinfo`` and ``lscpu``; the results are a typed, versioned JSON
document (:class:`BenchmarkReport`) that ``tillsight report`` reads to show device figures instead of
the conversion host's. No TensorFlow here: this runs on the device.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from . import errors as _errors
from ._version import __version__
from .bundle import read_bundle
from .bundle_metrics import latency_percentiles_ms
from .errors import BudgetError, DataError, OptionsError, SourceError, TillsightError
from .staging import staged_file

__all__ = [
    "DEFAULT_FRAMES",
    "LatencyStats",
    "BudgetCheck",
    "HostInfo",
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

# ARM's "CPU part" numbers of the cores found in kiosk-class boards (Raspberry Pi, Coral Dev Board, Jetson).
_ARM_CORES = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd4f": "Neoverse-V2",
}


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Percentiles of one timed loop, in milliseconds (:func:`~tillsight.bundle_metrics.latency_percentiles_ms`)."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        if not seconds:
            raise OptionsError("no timed run to summarise: ask for at least one frame")
        p50, p95, p99 = latency_percentiles_ms(seconds, (50, 95, 99))
        return cls(p50, p95, p99, len(seconds))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyStats:
        return cls(_number(data, "p50_ms"), _number(data, "p95_ms"), _number(data, "p99_ms"), int(_number(data, "runs")))


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetCheck:
        return cls(_text(data, "name"), _number(data, "limit"), _number(data, "measured"), _text(data, "what"))


def _in_unit(name: str, value: float) -> str:
    """A budget's figure in its unit: ``63.2 ms``, ``81.0 MB``."""
    return f"{value:.1f} ms" if name.endswith("_ms") else f"{value / 1e6:.1f} MB"


@dataclasses.dataclass(frozen=True)
class HostInfo:
    """The machine the figures come from."""

    cpu: str
    cores: int
    machine: str
    system: str
    python: str

    @classmethod
    def current(cls) -> HostInfo:
        return cls(cpu_model(), os.cpu_count() or 1, platform.machine(), platform.system(), platform.python_version())

    def describe(self) -> str:
        return f"{self.cpu}, {self.cores} cores, {self.system} {self.machine}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostInfo:
        return cls(
            _text(data, "cpu"), int(_number(data, "cores")), _text(data, "machine"), _text(data, "system"), _text(data, "python")
        )


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundleBenchmark:
        reason = data.get("fallback_reason")
        threads = data.get("threads")
        return cls(
            bundle=_text(data, "bundle"),
            profile=_text(data, "profile"),
            backend=_text(data, "backend"),
            model_sha256=_text(data, "model_sha256"),
            engine=_text(data, "engine"),
            fallback_reason=None if reason is None else str(reason),
            threads=None if threads is None else int(threads),
            source=_text(data, "source"),
            cold_start_s=_number(data, "cold_start_s"),
            peak_rss_bytes=int(_number(data, "peak_rss_bytes")),
            classify=LatencyStats.from_dict(_table(data, "classify")),
            invoke=LatencyStats.from_dict(_table(data, "invoke")),
            budgets=tuple(BudgetCheck.from_dict(item) for item in _list(data, "budgets")),
        )


@dataclasses.dataclass(frozen=True)
class BenchmarkReport:
    """What ``tillsight benchmark`` writes: the host, the package versions, one result per bundle."""

    host: HostInfo
    versions: dict[str, str]
    created: str
    results: tuple[BundleBenchmark, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

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
            return cls(
                host=HostInfo.from_dict(_table(data, "host")),
                versions={str(k): str(v) for k, v in _table(data, "versions").items()},
                created=_text(data, "created"),
                results=tuple(BundleBenchmark.from_dict(item) for item in _list(data, "results")),
            )
        except (KeyError, TypeError, ValueError) as exc:
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
        measured = _run_worker(Path(path), frames, threads, source, launcher)
        budgets = _budget_checks(manifest.profile.get("budgets", {}), measured, max_latency_ms, max_memory_bytes)
        results.append(
            BundleBenchmark(
                bundle=str(path),
                profile=manifest.profile_name,
                backend=manifest.runtime.backend.value,
                model_sha256=str(manifest.artifacts[manifest.runtime.model_file]["sha256"]),
                engine=measured["engine"],
                fallback_reason=measured["fallback_reason"],
                threads=measured["threads"],
                source=measured["source"],
                cold_start_s=round(measured["cold_start_s"], 3),
                peak_rss_bytes=int(measured["peak_rss_bytes"]),
                classify=LatencyStats.from_seconds(measured["classify_s"]),
                invoke=LatencyStats.from_seconds(measured["invoke_s"]),
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
    path = Path(path)
    with staged_file(path) as temporary:
        Path(temporary).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def raise_over_budget(report: BenchmarkReport) -> None:
    """Raises BudgetError naming the first budget a bundle is over, the figure and the profile."""
    for result in report.results:
        for check in result.over_budget:
            raise BudgetError(f"{result.bundle}: {check.describe(result.profile, report.host.describe())}")


def _budget_checks(
    budgets: Mapping[str, Any], measured: Mapping[str, Any], max_latency_ms: float | None, max_memory_bytes: int | None
) -> tuple[BudgetCheck, ...]:
    """The profile's latency and memory budgets (0: none) or the overrides, against the measured figures."""
    latency = max_latency_ms if max_latency_ms is not None else float(budgets.get("max_latency_ms", 0) or 0)
    memory = max_memory_bytes if max_memory_bytes is not None else float(budgets.get("max_memory_bytes", 0) or 0)
    checks = []
    if latency:
        p50 = LatencyStats.from_seconds(measured["classify_s"]).p50_ms
        checks.append(BudgetCheck("max_latency_ms", float(latency), p50, "classify p50"))
    if memory:
        checks.append(BudgetCheck("max_memory_bytes", float(memory), float(measured["peak_rss_bytes"]), "peak RSS"))
    return tuple(checks)


def _run_worker(
    bundle: Path, frames: int, threads: int | None, source: str | Path | None, launcher: Sequence[str]
) -> dict[str, Any]:
    """Run the bundle in a fresh Python process; its last stdout line is the JSON of what it measured."""
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
        measured = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        measured = None
    if not isinstance(measured, dict):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TillsightError(f"the benchmark process for {bundle} failed (exit {done.returncode}): {last}")
    if "error" in measured:  # a TillsightError in the worker: the same class here, the same one line
        kind = getattr(_errors, str(measured.get("kind")), TillsightError)
        raise (kind if isinstance(kind, type) and issubclass(kind, TillsightError) else TillsightError)(measured["error"])
    measured["cold_start_s"] = measured.pop("first_result_unix") - started
    return measured


def cpu_model() -> str:
    """The CPU's model as Linux reports it (``/proc/cpuinfo``, then ``lscpu``), with the board when it names one.

    x86: ``AMD EPYC 7B13``; a Raspberry Pi 4: ``Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)``.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    try:
        board = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        board = ""
    found = describe_cpu(cpuinfo, board, _lscpu_model)
    return found or platform.processor() or f"{platform.machine()} CPU (model not reported by /proc/cpuinfo or lscpu)"


def describe_cpu(cpuinfo: str, board: str = "", lscpu_model: Any = lambda: "") -> str:
    """The CPU named from ``/proc/cpuinfo`` text: x86's ``model name``; on ARM, the core decoded from
    ``CPU part`` (else lscpu's model name), after the board (cpuinfo's ``Model`` line or the device tree's)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if value and key not in fields:
            fields[key] = value
    named = fields.get("model name", "")
    if named and not named.startswith("ARMv"):  # x86; ARM kernels may say only "ARMv8 Processor rev 3 (v8l)"
        core = named
    else:
        core = _ARM_CORES.get(fields.get("cpu part", "").lower(), "") or lscpu_model() or named
    named_board = fields.get("model", "")
    board = board or ("" if named_board.isdigit() else named_board)  # x86's "model" is a number
    if board and core and core != named:
        return f"{board} ({core})"
    return core or board


def _lscpu_model() -> str:
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip() not in ("", "-"):
            return value.strip()
    return ""


def package_versions() -> dict[str, str]:
    """Versions of tillsight and of the runtime packages installed here."""
    from importlib import metadata  # here, not at the top: it costs `import tillsight` about 20 ms

    versions = {"tillsight": __version__, "python": platform.python_version()}
    for name in ("numpy", "opencv-python-headless", "opencv-python", "ai-edge-litert", "tflite-runtime", "openvino"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data[key]
    if not isinstance(value, dict):
        raise TypeError(f"'{key}' must be an object")
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise TypeError(f"'{key}' must be a list")
    return value


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"'{key}' must be a number, got {value!r}")
    return float(value)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"'{key}' must be a string, got {value!r}")
    return value
