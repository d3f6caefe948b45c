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

from .bundle import gzip_bytes, read_bundle
from .errors import TillsightError

__all__ = ["BundleSummary", "summarize_bundle", "markdown_table", "plot_accuracy_latency"]


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
    host: str


def summarize_bundle(path: str | Path) -> BundleSummary:
    """Read (and verify) a bundle and collect its measurements.

    Raises:
        BundleError: Not a bundle, or a tampered one.
    """
    bundle = read_bundle(path)
    manifest = bundle.manifest
    model_files = [bundle.path / name for name in manifest.artifacts if name != "manifest.json"]
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
        host=latency.host if latency else "",
    )


def _number(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def markdown_table(summaries: Sequence[BundleSummary]) -> str:
    """One markdown table row per bundle."""
    lines = [
        "| bundle | backend | size MB | gzip MB | float top-1 | converted top-1 | drop (points) | agreement | latency p50 / p95 ms | threads |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        lines.append(
            f"| {s.name} | {s.backend} | {s.model_bytes / 1e6:.2f} | {s.gzip_bytes / 1e6:.2f} | {_number(s.float_top1, 2, '%')} | "
            f"{_number(s.converted_top1, 2, '%')} | {_number(s.top1_drop)} | {_number(s.top1_agreement, 2, '%')} | "
            f"{_number(s.latency_p50_ms)} / {_number(s.latency_p95_ms)} | {s.threads} |"
        )
    hosts = sorted({s.host for s in summaries if s.host})
    if hosts:
        lines.append("")
        lines.append(f"Latency measured at conversion on: {'; '.join(hosts)}.")
    return "\n".join(lines) + "\n"


def plot_accuracy_latency(
    points: Sequence[tuple[str, float, float, int]], path: str | Path, title: str = "accuracy vs latency"
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
    usable = [p for p in points if p[1] is not None and p[2] is not None]
    if not usable:
        return None
    width, height, margin = 1080, 600, 80
    legend_x = 660  # the plot takes the left part, a legend names the points on the right
    image = np.full((height, width, 3), 255, np.uint8)
    xs, ys = [p[1] for p in usable], [p[2] for p in usable]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 10  # baselines far slower than the int8 models
    scale = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_lo, x_hi = (scale(min(xs)) - 0.2, scale(max(xs)) + 0.2) if log_x else (0.0, max(xs) * 1.15)
    y_lo, y_hi = max(0.0, min(ys) - 5), min(100.0, max(ys) + 5)
    if y_hi - y_lo < 1:
        y_lo, y_hi = y_lo - 1, y_hi + 1

    def to_pixel(x: float, y: float) -> tuple[int, int]:  # x already on the axis scale
        px = margin + (x - x_lo) / (x_hi - x_lo) * (legend_x - 40 - margin)
        py = height - margin - (y - y_lo) / (y_hi - y_lo) * (height - 2 * margin)
        return int(round(px)), int(round(py))

    black, grey = (0, 0, 0), (200, 200, 200)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(6):  # grid and tick labels
        x = x_lo + (x_hi - x_lo) * k / 5
        y = y_lo + (y_hi - y_lo) * k / 5
        cv2.line(image, to_pixel(x, y_lo), to_pixel(x, y_hi), grey, 1)
        cv2.line(image, to_pixel(x_lo, y), to_pixel(x_hi, y), grey, 1)
        cv2.putText(image, f"{10 ** x if log_x else x:.2f}", (to_pixel(x, y_lo)[0] - 18, height - margin + 22), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(image, f"{y:.1f}", (12, to_pixel(x_lo, y)[1] + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, to_pixel(x_lo, y_hi), to_pixel(x_hi, y_lo), black, 1)
    axis = "latency p50 (ms, log scale)" if log_x else "latency p50 (ms)"
    cv2.putText(image, axis, ((margin + legend_x) // 2 - 90, height - 20), font, 0.55, black, 1, cv2.LINE_AA)
    cv2.putText(image, "top-1 (%)", (10, margin - 30), font, 0.55, black, 1, cv2.LINE_AA)
    cv2.putText(image, f"{title} (marker area ~ model size)", (margin, 30), font, 0.6, black, 1, cv2.LINE_AA)
    largest = max(p[3] for p in usable) or 1
    palette = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140), (194, 119, 227)]
    for k, (label, x, y, size) in enumerate(usable):
        radius = max(4, int(round(28 * math.sqrt(size / largest))))
        center = to_pixel(scale(x), y)
        colour = palette[k % len(palette)]
        overlay = image.copy()
        cv2.circle(overlay, center, radius, colour, -1, cv2.LINE_AA)
        image[:] = cv2.addWeighted(overlay, 0.6, image, 0.4, 0)  # see-through: close points stay visible
        cv2.circle(image, center, radius, black, 1, cv2.LINE_AA)
        cv2.putText(image, str(k + 1), (center[0] - 5, center[1] + 5), font, 0.45, black, 1, cv2.LINE_AA)
        row_y = margin + 22 * k
        cv2.circle(image, (legend_x + 8, row_y - 5), 7, colour, -1, cv2.LINE_AA)
        text = f"{k + 1} {label}: {y:.1f}%, {x:.2f} ms, {size / 1e6:.2f} MB"
        cv2.putText(image, text, (legend_x + 22, row_y), font, 0.42, black, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise TillsightError(f"cannot write the plot {path}: check that its folder is writable")
    return path
