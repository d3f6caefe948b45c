"""A bundle described in a few lines: what ``tillsight inspect`` and ``tillsight convert`` print, for a kiosk app to show too."""

from __future__ import annotations

from typing import Any

from .bundle import Manifest
from .bundle_metrics import AccuracyMetrics, PruningMetrics
from .profiles import PruningMode

__all__ = ["summary_lines"]


def summary_lines(manifest: Manifest) -> list[str]:
    """What a bundle holds and how it was measured, as the lines ``tillsight inspect`` prints."""
    lines = []
    spec = manifest.input
    metrics = manifest.metrics
    lines.append(f"profile: {manifest.profile_name} ({manifest.runtime.backend.value}, {manifest.runtime.threads} threads)")
    lines.append(
        f"classes: {len(manifest.labels)}  input: {spec.height}x{spec.width} {spec.dtype} {spec.color_order.value}, {spec.resize.value}, crop {spec.crop:g}"
    )
    lines.append(
        f"model: {manifest.runtime.model_file} ({metrics.model_bytes / 1e6:.2f} MB), source sha256 {manifest.source_model.sha256[:12] or '?'}"
    )
    accuracy = metrics.accuracy
    if accuracy is not None:
        tolerance = "?" if accuracy.tolerance is None else f"{accuracy.tolerance:g}"
        lines.append(
            f"accuracy on {accuracy.images} images: float {accuracy.float_top1:.2f}%, "
            f"converted {accuracy.converted_top1:.2f}%, drop {accuracy.top1_drop:.2f} points "
            f"(tolerance {tolerance}), agreement {accuracy.top1_agreement:.2f}%"
        )
    if metrics.pruning is not None:
        lines.append(_pruning_line(metrics.pruning, accuracy))
    qat = metrics.qat
    if qat is not None:
        photos = "?" if qat.training.photos is None else qat.training.photos
        lines.append(
            f"quantization-aware fine-tuning: {qat.training.epochs} epochs on {photos} photos in {qat.training.seconds:.0f} s, "
            f"{qat.activation_quantizers} activation ranges learned"
        )
    latency = metrics.latency_host
    if latency is not None:
        lines.append(f"latency on this host: p50 {latency.p50_ms:.2f} ms, p95 {latency.p95_ms:.2f} ms ({latency.engine})")
    return lines + _edgetpu_lines(manifest.target_report)


def _edgetpu_lines(target_report: dict[str, Any]) -> list[str]:
    """The Edge TPU preflight and compiler status recorded by a Coral conversion (none for other backends)."""
    lines = []
    preflight = target_report.get("edgetpu_preflight")
    if isinstance(preflight, dict) and preflight.get("summary"):
        lines.append(f"Edge TPU preflight: {preflight['summary']}")
    compiler = target_report.get("edgetpu_compiler")
    if isinstance(compiler, dict) and compiler.get("status"):
        step = compiler.get("next_step")
        lines.append(f"Edge TPU compiler: {compiler['status']}" + (f"; next: {step}" if step else ""))
    return lines


def _pruning_line(pruning: PruningMetrics, accuracy: AccuracyMetrics | None) -> str:
    """One line on what pruning did: sparsity and gzip size, or channels and MACs; the pruned float top-1."""
    if pruning.mode == PruningMode.UNSTRUCTURED.value:
        line = f"pruning: {pruning.sparsity:.1%} of {pruning.pruned_weights} kernel weights are zero"
        if pruning.gzip_bytes and pruning.gzip_bytes_unpruned:
            ratio = pruning.gzip_bytes / pruning.gzip_bytes_unpruned
            line += f", gzip {pruning.gzip_bytes / 1e6:.2f} MB ({ratio:.2f}x the unpruned model)"
    else:
        line = f"pruning: {pruning.kept_channels}/{pruning.prunable_channels} channels kept"
        if pruning.macs_before is not None and pruning.macs_after is not None:
            line += f", MACs {pruning.macs_before / 1e6:.1f}M -> {pruning.macs_after / 1e6:.1f}M"
    if accuracy is not None and accuracy.pruned_top1 is not None:
        line += f"; pruned float top-1 {accuracy.pruned_top1:.2f}%"
    return line
