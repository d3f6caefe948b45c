"""The checkout pipeline: source → capture thread → inference thread → decisions → sinks.

::

    source ──► Capture (own thread; newest frame wins on live sources)
                 │
                 ▼
    worker thread: tray crop ─► TrayMonitor ─► Classifier (only while the tray is occupied)
                 │                               ─► CheckoutLogic ─► events
                 │              (a folder of photos: every photo classified, one event each)
                 ▼
    SinkDispatcher ─► one bounded queue and thread per sink ─► sinks (plain callables)

Only the worker thread calls the model, so the interpreter is never used from two threads.
Collaborators are built by the caller and passed in, with one options object.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

import numpy as np

from ..classifier import Classifier, Prediction
from ..errors import OptionsError, SourceError, TillsightError, summarize
from .capture import Capture, CaptureOptions, SourceState
from .checkout import CheckoutLogic, CheckoutOptions, TrayMonitor
from .events import Event
from .frames import Frame
from .metrics import MetricsRecorder, PipelineMetrics
from .sinks import Sink, SinkDispatcher
from .sources import Source

__all__ = ["PipelineOptions", "FrameResult", "CheckoutPipeline", "crop_roi"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Everything a :class:`CheckoutPipeline` can be told.

    Attributes:
        checkout: Tray region, voting and empty-tray thresholds.
        capture: Frame dropping, pacing, reconnection and freeze detection.
        metrics_interval: Seconds between metrics log lines (0: never).
        sink_capacity: Events that may wait for one slow sink before new ones are dropped for it
            (a sink with ``never_drop`` is waited for instead).
        max_frames: Stop after processing this many frames (None: run until the source ends).
    """

    checkout: CheckoutOptions = CheckoutOptions()
    capture: CaptureOptions = CaptureOptions()
    metrics_interval: float = 30.0
    sink_capacity: int = 256
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise OptionsError(f"max_frames must be None or at least 1, got {self.max_frames}")
        if self.metrics_interval < 0 or self.sink_capacity < 1:
            raise OptionsError("metrics_interval must not be negative and sink_capacity must be at least 1")


@dataclasses.dataclass(frozen=True)
class FrameResult:
    """What the pipeline made of one frame (for overlays and recording; see ``on_frame``).

    Attributes:
        frame: The frame.
        occupied: Whether the tray looked occupied (None while the empty tray is being learned).
        prediction: The top prediction, or None when the model did not run on this frame.
        events: Events this frame completed.
    """

    frame: Frame
    occupied: bool | None
    prediction: Prediction | None
    events: tuple[Event, ...]


def _log_sparsely(count: int, message: str, *args: object) -> None:
    """Warn for the first 10 failures, then every 100th: a persistent fault must not flood the log."""
    if count <= 10 or count % 100 == 0:
        logger.warning(message + (" (%d so far)" % count if count > 10 else ""), *args)


def crop_roi(image: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """The region ``(x, y, width, height)`` of ``image``, clipped to it (a view, not a copy).

    Raises:
        SourceError: The region lies entirely outside the image.
    """
    if roi is None:
        return image
    x, y, width, height = roi
    frame_h, frame_w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(frame_w, x + width), min(frame_h, y + height)
    if x0 >= x1 or y0 >= y1:
        raise SourceError(
            f"tray region {x},{y},{width},{height} lies outside the {frame_w}x{frame_h} frame; "
            "pass --roi x,y,width,height within the frame"
        )
    return image[y0:y1, x0:x1]


class CheckoutPipeline:
    """Runs a classifier on a frame source and turns what it sees into checkout events."""

    def __init__(
        self,
        source: Source,
        classifier: Classifier,
        sinks: Sequence[Sink] = (),
        options: PipelineOptions = PipelineOptions(),
        tray_reference: np.ndarray | None = None,
        on_frame: Callable[[FrameResult], None] | None = None,
    ):
        """Args:
        source: Where frames come from (see :func:`tillsight.pipelines.open_source`).
        classifier: The loaded model; the pipeline uses it from one thread only.
        sinks: Callables receiving each event.
        options: Thresholds and policies.
        tray_reference: A BGR picture of the empty tray region (or whole frame when no
            ``roi``); learned from the first frames when None.
        on_frame: Called with a :class:`FrameResult` after every frame, on the inference
            thread (keep it quick: draw, record, not network calls). Errors are logged.

        Raises:
            OptionsError: ``background_label`` is set but is not one of the model's labels.
        """
        label = options.checkout.background_label
        if label is not None and label not in classifier.labels:
            raise OptionsError(f"background_label {label!r} is not a label of the model ({', '.join(classifier.labels)})")
        self.classifier = classifier
        self.options = options
        self.capture = Capture(source, options.capture)
        self.monitor = TrayMonitor(options.checkout, tray_reference)
        self.logic = CheckoutLogic(options.checkout, source.source_id)
        self._sinks = SinkDispatcher(sinks, options.sink_capacity)
        self._metrics = MetricsRecorder()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="tillsight-inference", daemon=True)
        self._started = False
        self._on_frame = on_frame
        self._stills = source.stills  # photos of one item each (an image folder), not a scene
        self.error: Exception | None = None

    # -- control -----------------------------------------------------------------------

    def start(self) -> CheckoutPipeline:
        """Start capture, inference and sink threads; returns self."""
        if self._started:
            raise RuntimeError("a pipeline can be started once")
        self._started = True
        self._metrics = MetricsRecorder()
        self._sinks.start()
        self.capture.start()
        self._worker.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait until a recorded source has been processed to its end (or the pipeline stopped).

        Returns:
            True when the pipeline has finished, False on timeout.
        """
        self._worker.join(timeout)
        if self._worker.is_alive():
            return False
        self._shutdown()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading frames, finish the frame in hand, deliver queued events, end all threads."""
        self._stop.set()
        self.capture.stop(timeout)
        if self._worker.is_alive():
            self._worker.join(timeout)
        self._shutdown(timeout)

    def run(self) -> PipelineMetrics:
        """Start and block until the source ends (Ctrl-C stops cleanly). Returns the final metrics.

        Raises:
            SourceError: The source could not be opened, or was lost for good.
            Exception: Whatever stopped the inference thread (a bug), as it was raised there.
        """
        self.start()
        try:
            while not self.join(timeout=0.5):
                pass
        except KeyboardInterrupt:
            logger.info("interrupted; stopping")
        finally:
            self.stop()
        if self.error is not None:
            raise self.error
        if self.capture.state is SourceState.FAILED and self.capture.error is not None:
            raise self.capture.error
        return self.metrics()

    def metrics(self) -> PipelineMetrics:
        """Current measurements (thread-safe)."""
        return self._metrics.snapshot(self.capture.stats(), self._sinks.stats())

    def _shutdown(self, timeout: float = 5.0) -> None:
        self.capture.stop(timeout)
        self._sinks.close(timeout)

    def __enter__(self) -> CheckoutPipeline:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        interval, max_frames = self.options.metrics_interval, self.options.max_frames
        next_log = time.monotonic() + interval
        processed = 0
        try:
            while not self._stop.is_set():
                if max_frames is not None and processed >= max_frames:
                    self.capture.stop()
                    break
                frame = self.capture.get(timeout=0.1)
                if frame is None:
                    if self.capture.finished:
                        break
                    continue
                try:
                    self._process(frame)
                except Exception as exc:  # one bad frame must not stop the checkout...
                    if processed == 0 and isinstance(exc, SourceError):
                        raise  # ...but a tray region outside the very first frame is a setup error
                    self._metrics.count("frame_errors")
                    _log_sparsely(self._metrics.frame_errors, "frame %d skipped: %s", frame.frame_id, summarize(exc))
                processed += 1
                if interval and time.monotonic() >= next_log:
                    logger.info("%s", self.metrics().summary())
                    next_log = time.monotonic() + interval
        except Exception as exc:  # never leave a kiosk app waiting on a dead thread: run() raises it
            self.error = exc  # a bug stays what it is; only what the SDK raises on purpose is a TillsightError
            if isinstance(exc, TillsightError):  # run() raises it, with its fix: one line, not two
                logger.debug("pipeline stopped: %s", exc)
            else:
                logger.error("pipeline stopped: %s", summarize(exc), exc_info=True)
            self.capture.stop()

    def _process(self, frame: Frame) -> None:
        checkout, metrics = self.options.checkout, self._metrics
        started = time.perf_counter()
        tray = crop_roi(frame.image, checkout.roi)
        model_decides = checkout.background_label is not None
        if self._stills:  # a photo of one item: always classified, decided alone
            occupied = True
        else:
            occupied = None if model_decides else self.monitor.update(tray, empty_hint=not self.logic.occupied)
        after_tray = time.perf_counter()
        metrics.stage("tray", after_tray - started)
        prediction = None
        if model_decides or occupied:
            try:
                tensor = self.classifier.prepare(tray)
                prepared = time.perf_counter()
                scores = self.classifier.infer(tensor)
                inferred = time.perf_counter()
            except Exception as exc:  # InferenceError, or an untranslated error of a backend
                metrics.count("inference_errors")
                _log_sparsely(metrics.inference_errors, "frame %d skipped: %s", frame.frame_id, summarize(exc))
                metrics.frame_done(frame.captured_at, classified=False)
                return
            metrics.stage("preprocess", prepared - after_tray)
            metrics.stage("inference", inferred - prepared)
            prediction = self.classifier.top(scores, 1)[0]
            if model_decides:
                occupied = not self.logic.is_empty_prediction(prediction)
        decision_started = time.perf_counter()
        if self._stills:
            events = self.logic.decide_photo(frame.timestamp, prediction)
        else:
            events = self.logic.update(frame.timestamp, occupied, prediction) if occupied is not None else []
        for event in events:  # occupied None: still learning the empty tray
            metrics.count("events")
            logger.debug("%s", event)
            self._sinks.submit(event)
        metrics.stage("decision", time.perf_counter() - decision_started)
        metrics.frame_done(frame.captured_at, classified=prediction is not None)
        if self._on_frame is not None:
            try:
                self._on_frame(FrameResult(frame, occupied, prediction, tuple(events)))
            except Exception as exc:
                logger.warning("on_frame callback failed on frame %d: %s", frame.frame_id, summarize(exc))
