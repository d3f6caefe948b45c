"""``tillsight report``: compare bundles side by side, as a markdown table and a plot.

One row and one point per bundle: size on disk (and gzipped), top-1 of the float and the
converted model with the drop and agreement measured at conversion, and host latency.
The plot puts accuracy against latency, with marker area proportional to model size.
It is drawn with OpenCV, so reports work on the device side too (no plotting library).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .benchmarking import BenchmarkReport
from .bundle import gzip_bytes, read_bundle
from .errors import TillsightError

__all__ = ["BundleSummary", "summarize_bundle", "with_device_latency", "markdown_table", "plot_accuracy_latency"]


@dataclasses.dataclass(frozen=True)
class BundleSummary:
    """What a bundle's manifest says it measured, plus its gzip size."""

    name: str
    path: str
    backend: str
    model_bytes: int
    gzip_bytes: int
    float_top1: float | None
    converted_top1: float | None
    top1_drop: float | None
    top1_agreement: float | None
    eval_images: int | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    threads: int
    host: str  # where the latency was measured
    model_sha256: str = ""


def summarize_bundle(path: str | Path) -> BundleSummary:
    """Read (and verify) a bundle and collect its measurements.

    Raises:
        BundleError: Not a bundle, or a tampered one.
    """
    bundle = read_bundle(path)
    manifest = bundle.manifest
    model_files = [bundle.path / name for name in manifest.model_artifacts if name != "manifest.json"]
    model_bytes = sum(p.stat().st_size for p in model_files)
    accuracy, latency = manifest.metrics.accuracy, manifest.metrics.latency_host
    return BundleSummary(
        name=bundle.path.name if bundle.path.name == manifest.profile_name else f"{bundle.path.name} ({manifest.profile_name})",
        path=str(bundle.path),
        backend=manifest.runtime.backend.value,
        model_bytes=model_bytes,
        gzip_bytes=gzip_bytes(model_files),
        float_top1=accuracy.float_top1 if accuracy else None,
        converted_top1=accuracy.converted_top1 if accuracy else None,
        top1_drop=accuracy.top1_drop if accuracy else None,
        top1_agreement=accuracy.top1_agreement if accuracy else None,
        eval_images=accuracy.images if accuracy else None,
        latency_p50_ms=latency.p50_ms if latency else None,
        latency_p95_ms=latency.p95_ms if latency else None,
        threads=latency.threads if latency and latency.threads is not None else manifest.runtime.threads,
        host=f"{latency.host} (at conversion)" if latency else "",
        model_sha256=manifest.model_sha256,
    )


def with_device_latency(summaries: Sequence[BundleSummary], benchmarks: Sequence[BenchmarkReport]) -> list[BundleSummary]:
    """The summaries with latency measured by ``tillsight benchmark`` where one measured the same model.

    A bundle is matched by its model's sha256, so a bundle copied to the device still matches. Its
    p50/p95 become the benchmark's bare inference (what conversion measures too), and ``host`` names
    the device; bundles no benchmark measured keep the conversion host's figures.
    """
    measured = {}
    for document in benchmarks:
        for result in document.results:
            measured[result.model_sha256] = (result, document.host)
    updated = []
    for summary in summaries:
        found = measured.get(summary.model_sha256)
        if found is None:
            updated.append(summary)
            continue
        result, host = found
        updated.append(
            dataclasses.replace(
                summary,
                latency_p50_ms=result.invoke.p50_ms,
                latency_p95_ms=result.invoke.p95_ms,
                threads=result.threads or 0,
                host=f"{host.describe()} (tillsight benchmark)",
            )
        )
    return updated


def _number(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def markdown_table(summaries: Sequence[BundleSummary]) -> str:
    """One markdown table row per bundle; a footnote names where latency was measured ([k] per row when hosts differ)."""
    hosts = list(dict.fromkeys(s.host for s in summaries if s.host))
    lines = [
        "| bundle | backend | size MB | gzip MB | float top-1 | converted top-1 | drop (points) | agreement | inference p50 / p95 ms | threads |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        where = f" [{hosts.index(s.host) + 1}]" if len(hosts) > 1 and s.host else ""
        lines.append(
            f"| {s.name} | {s.backend} | {s.model_bytes / 1e6:.2f} | {s.gzip_bytes / 1e6:.2f} | {_number(s.float_top1, 2, '%')} | "
            f"{_number(s.converted_top1, 2, '%')} | {_number(s.top1_drop)} | {_number(s.top1_agreement, 2, '%')} | "
            f"{_number(s.latency_p50_ms)} / {_number(s.latency_p95_ms)}{where} | {s.threads} |"
        )
    if len(hosts) == 1:
        lines += ["", f"Inference (the model alone, not frame preparation) measured on: {hosts[0]}."]
    elif hosts:
        lines += [
            "",
            "Inference (the model alone, not frame preparation) measured on: "
            + "; ".join(f"[{k}] {host}" for k, host in enumerate(hosts, 1))
            + ".",
        ]
    return "\n".join(lines) + "\n"


def plot_accuracy_latency(
    points: Sequence[tuple[str, float | None, float | None, int]], path: str | Path, title: str = "accuracy vs latency"
) -> Path | None:
    """Write a PNG scatter plot: x latency (ms), y top-1 (%), marker area proportional to bytes.

    Args:
        points: ``(label, latency_ms, top1_percent, size_bytes)`` per point.
        path: The PNG file to write.
        title: Drawn at the top.

    Returns:
        The path written, or None when no point has both a latency and an accuracy (nothing to plot).

    Raises:
        TillsightError: The PNG cannot be written.
    """
    usable = [(label, ms, top1, size) for label, ms, top1, size in points if ms is not None and top1 is not None]
    if not usable:
        return None
    axes = _Axes.around([p[1] for p in usable], [p[2] for p in usable])
    image = np.full((axes.height, axes.width, 3), 255, np.uint8)
    _draw_axes(image, axes, title)
    _draw_points(image, axes, usable)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise TillsightError(f"cannot write the plot {path}: check that its folder is writable")
    return path


_BLACK, _GREY, _FONT = (0, 0, 0), (200, 200, 200), cv2.FONT_HERSHEY_SIMPLEX
_PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140), (194, 119, 227)]


@dataclasses.dataclass(frozen=True)
class _Axes:
    """Where the plot's values land: latency on x (log when it spans over 10x), top-1 on y; a legend on the right."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    log_x: bool
    width: int = 1080
    height: int = 600
    margin: int = 80
    legend_x: int = 660

    @classmethod
    def around(cls, xs: list[float], ys: list[float]) -> _Axes:
        log_x = min(xs) > 0 and max(xs) / min(xs) > 10  # baselines far slower than the int8 models
        x_lo, x_hi = (math.log10(min(xs)) - 0.2, math.log10(max(xs)) + 0.2) if log_x else (0.0, max(xs) * 1.15)
        y_lo, y_hi = max(0.0, min(ys) - 5), min(100.0, max(ys) + 5)
        if y_hi - y_lo < 1:
            y_lo, y_hi = y_lo - 1, y_hi + 1
        return cls(x_lo, x_hi, y_lo, y_hi, log_x)

    def scale(self, latency: float) -> float:
        """A latency on the x axis's scale."""
        return math.log10(latency) if self.log_x else latency

    def pixel(self, x: float, y: float) -> tuple[int, int]:
        """The pixel of ``(x on the axis scale, y)``."""
        px = self.margin + (x - self.x_lo) / (self.x_hi - self.x_lo) * (self.legend_x - 40 - self.margin)
        py = self.height - self.margin - (y - self.y_lo) / (self.y_hi - self.y_lo) * (self.height - 2 * self.margin)
        return int(round(px)), int(round(py))


def _draw_axes(image: np.ndarray, axes: _Axes, title: str) -> None:
    """Grid, tick labels, frame, axis names and title."""
    a, margin, height = axes, axes.margin, axes.height
    for k in range(6):
        x = a.x_lo + (a.x_hi - a.x_lo) * k / 5
        y = a.y_lo + (a.y_hi - a.y_lo) * k / 5
        cv2.line(image, a.pixel(x, a.y_lo), a.pixel(x, a.y_hi), _GREY, 1)
        cv2.line(image, a.pixel(a.x_lo, y), a.pixel(a.x_hi, y), _GREY, 1)
        tick = f"{10**x if a.log_x else x:.2f}"
        cv2.putText(image, tick, (a.pixel(x, a.y_lo)[0] - 18, height - margin + 22), _FONT, 0.45, _BLACK, 1, cv2.LINE_AA)
        cv2.putText(image, f"{y:.1f}", (12, a.pixel(a.x_lo, y)[1] + 5), _FONT, 0.45, _BLACK, 1, cv2.LINE_AA)
    cv2.rectangle(image, a.pixel(a.x_lo, a.y_hi), a.pixel(a.x_hi, a.y_lo), _BLACK, 1)
    name = "latency p50 (ms, log scale)" if a.log_x else "latency p50 (ms)"
    cv2.putText(image, name, ((margin + a.legend_x) // 2 - 90, height - 20), _FONT, 0.55, _BLACK, 1, cv2.LINE_AA)
    cv2.putText(image, "top-1 (%)", (10, margin - 30), _FONT, 0.55, _BLACK, 1, cv2.LINE_AA)
    cv2.putText(image, f"{title} (marker area ~ model size)", (margin, 30), _FONT, 0.6, _BLACK, 1, cv2.LINE_AA)


def _draw_points(image: np.ndarray, axes: _Axes, points: Sequence[tuple[str, float, float, int]]) -> None:
    """One numbered see-through disc per point (area ~ size), and its legend row."""
    largest = max(p[3] for p in points) or 1
    for k, (label, x, y, size) in enumerate(points):
        radius = max(4, int(round(28 * math.sqrt(size / largest))))
        center = axes.pixel(axes.scale(x), y)
        colour = _PALETTE[k % len(_PALETTE)]
        overlay = image.copy()
        cv2.circle(overlay, center, radius, colour, -1, cv2.LINE_AA)
        image[:] = cv2.addWeighted(overlay, 0.6, image, 0.4, 0)  # see-through: close points stay visible
        cv2.circle(image, center, radius, _BLACK, 1, cv2.LINE_AA)
        cv2.putText(image, str(k + 1), (center[0] - 5, center[1] + 5), _FONT, 0.45, _BLACK, 1, cv2.LINE_AA)
        row_y = axes.margin + 22 * k
        cv2.circle(image, (axes.legend_x + 8, row_y - 5), 7, colour, -1, cv2.LINE_AA)
        text = f"{k + 1} {label}: {y:.1f}%, {x:.2f} ms, {size / 1e6:.2f} MB"
        cv2.putText(image, text, (axes.legend_x + 22, row_y), _FONT, 0.42, _BLACK, 1, cv2.LINE_AA)
