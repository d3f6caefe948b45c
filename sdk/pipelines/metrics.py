"""Pipeline metrics: frame rate, per-stage latency percentiles, drops, frame age."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Any

from ..bundle_metrics import LatencyStats
from ..jsonfile import json_ready
from .sinks import SinkStats

if TYPE_CHECKING:
    from .capture import CaptureStats

__all__ = ["LatencyWindow", "PipelineMetrics", "MetricsRecorder"]

STAGES = ("tray", "preprocess", "inference", "decision")
_NONE_YET = LatencyStats(0.0, 0.0, 0.0, 0)  # what a log line says before anything was measured


class LatencyWindow:
    """The last ``size`` durations of one stage, for percentiles (bounded memory)."""

    def __init__(self, size: int = 2000):
        self._values: collections.deque[float] = collections.deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def stats(self) -> LatencyStats | None:
        """The percentiles of the durations in the window (None when nothing was recorded)."""
        return LatencyStats.from_seconds(list(self._values)) if self._values else None


@dataclasses.dataclass(frozen=True)
class PipelineMetrics:
    """A snapshot of a running (or finished) pipeline.

    Attributes:
        source_state: The capture's state (``running``, ``reconnecting``, ``ended``...).
        frames_read: Frames the source delivered.
        frames_processed: Frames that went through the decision logic.
        frames_classified: Frames the model ran on (an empty tray needs no model).
        frames_dropped: Frames replaced by newer ones before processing (live sources).
        inference_errors: Frames skipped because the model failed on them.
        reconnects: Times the source was lost and reopened.
        freezes: Times a frozen stream was detected.
        frames_converted: Grayscale or BGRA frames converted to BGR.
        frames_empty: Frames with no pixels, skipped.
        resolution_changes: Times the source changed its frame size.
        frame_errors: Frames skipped because processing them failed unexpectedly.
        events: Events emitted.
        sink_errors: Sink calls that raised (logged and skipped).
        events_dropped: Deliveries dropped because a sink fell too far behind (all sinks).
        sinks: Per sink: delivered, failed, dropped and waiting events.
        fps: Processed frames per second over the recent window.
        stage_latency: Per stage that ran (tray, preprocess, inference, decision): its latency percentiles.
        frame_age: The percentiles of a frame's age (capture to decision); None before the first frame.
        elapsed_s: Seconds since the pipeline started.
    """

    source_state: str
    frames_read: int
    frames_processed: int
    frames_classified: int
    frames_dropped: int
    inference_errors: int
    reconnects: int
    freezes: int
    frames_converted: int
    frames_empty: int
    resolution_changes: int
    frame_errors: int
    events: int
    sink_errors: int
    events_dropped: int
    fps: float
    stage_latency: dict[str, LatencyStats]
    frame_age: LatencyStats | None
    elapsed_s: float
    sinks: tuple[SinkStats, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data: dict[str, Any] = json_ready(self)
        return data

    def summary(self) -> str:
        """One log line."""
        inference = self.stage_latency.get("inference") or _NONE_YET
        age = self.frame_age or _NONE_YET
        return (
            f"{self.fps:.1f} fps, {self.frames_processed} frames ({self.frames_classified} classified, "
            f"{self.frames_dropped} dropped, {self.inference_errors + self.frame_errors} failed), inference p50 "
            f"{inference.p50_ms:.1f} ms, frame age p50 {age.p50_ms:.1f} ms p95 {age.p95_ms:.1f} ms, "
            f"{self.events} events, source {self.source_state}, {self.reconnects} reconnects"
            + "".join(f", sink {s.name} dropped {s.dropped}" for s in self.sinks if s.dropped)
        )


class MetricsRecorder:
    """Collects the pipeline's measurements; written by the worker thread, read from any."""

    def __init__(self, window: int = 2000):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.stages = {stage: LatencyWindow(window) for stage in STAGES}
        self.frame_age = LatencyWindow(window)
        self._done_at: collections.deque[float] = collections.deque(maxlen=window)
        self.frames_processed = 0
        self.frames_classified = 0
        self.inference_errors = 0
        self.frame_errors = 0
        self.events = 0

    def stage(self, name: str, seconds: float) -> None:
        with self._lock:
            self.stages[name].add(seconds)

    def frame_done(self, captured_at: float, classified: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_processed += 1
            self.frames_classified += classified
            self.frame_age.add(now - captured_at)
            self._done_at.append(now)

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def fps(self) -> float:
        with self._lock:
            if len(self._done_at) < 2:
                return 0.0
            span = self._done_at[-1] - self._done_at[0]
            return (len(self._done_at) - 1) / span if span > 0 else 0.0

    def snapshot(self, capture_stats: CaptureStats, sinks: tuple[SinkStats, ...]) -> PipelineMetrics:
        fps = self.fps()
        with self._lock:
            return PipelineMetrics(
                source_state=capture_stats.state.value,
                frames_read=capture_stats.frames_read,
                frames_processed=self.frames_processed,
                frames_classified=self.frames_classified,
                frames_dropped=capture_stats.frames_dropped,
                inference_errors=self.inference_errors,
                reconnects=capture_stats.reconnects,
                freezes=capture_stats.freezes,
                frames_converted=capture_stats.frames_converted,
                frames_empty=capture_stats.frames_empty,
                resolution_changes=capture_stats.resolution_changes,
                frame_errors=self.frame_errors,
                events=self.events,
                sink_errors=sum(stats.errors for stats in sinks),
                events_dropped=sum(stats.dropped for stats in sinks),
                fps=round(fps, 2),
                stage_latency={name: stats for name, window in self.stages.items() if (stats := window.stats())},
                frame_age=self.frame_age.stats(),
                elapsed_s=round(time.monotonic() - self.started, 3),
                sinks=sinks,
            )
