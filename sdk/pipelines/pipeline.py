"""The checkout pipeline: sources → capture threads → one inference thread → decisions → sinks.

::

    source per lane ──► Capture (own thread; newest frame wins on live sources)
                          │
                          ▼
    worker thread, one turn at a time, one frame of each lane per turn:
        tray crop ─► TrayMonitor ─► Classifier (only while a tray is occupied; the turn's
                                     frames in one infer_many call) ─► CheckoutLogic ─► events
        (a folder of photos: every photo classified, one event each)
                          │
                          ▼
    SinkDispatcher ─► one bounded queue and thread per sink ─► sinks (plain callables)

:class:`CheckoutPipeline` runs one source; :class:`~tillsight.pipelines.lanes.MultiLanePipeline`
runs several lanes of one kiosk on one model. Only the worker thread calls the model, so the
interpreter is never used from two threads, and every lane gets a turn in order.
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
        lane: The lane the frame came from (empty for one lane).
        tray: The frame's tray region (a view into ``frame.image``).
    """

    frame: Frame
    occupied: bool | None
    prediction: Prediction | None
    events: tuple[Event, ...]
    lane: str = ""
    tray: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)


def _log_sparsely(count: int, message: str, *args: object) -> None:
    """Warn for the first 10 failures, then every 100th: a persistent fault must not flood the log."""
    if count <= 10 or count % 100 == 0:
        logger.warning(message + (f" ({count} so far)" if count > 10 else ""), *args)


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


class _Lane:
    """One source's state: its capture, tray monitor, checkout logic and metrics."""

    def __init__(
        self,
        lane_id: str,
        source: Source,
        checkout: CheckoutOptions,
        capture: CaptureOptions,
        tray_reference: np.ndarray | None,
        notify: threading.Event,
    ):
        self.lane_id = lane_id
        self.checkout = checkout
        self.capture = Capture(source, capture, notify)
        self.monitor = TrayMonitor(checkout, tray_reference)
        self.logic = CheckoutLogic(checkout, source.source_id, lane_id)
        self.metrics = MetricsRecorder()
        self.stills = source.stills  # photos of one item each (an image folder), not a scene
        self.processed = 0
        self.done = False
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the frames the tray was learned on


@dataclasses.dataclass
class _Step:
    """One frame of one lane on its way through a turn."""

    lane: _Lane
    frame: Frame
    tray: np.ndarray
    occupied: bool | None
    started: float
    tensor: np.ndarray | None = None
    prediction: Prediction | None = None


class _LanesPipeline:
    """The engine of both pipelines: lanes, the inference thread, sinks."""

    def __init__(
        self,
        lanes: Sequence[tuple[str, Source, CheckoutOptions, np.ndarray | None]],
        classifier: Classifier,
        sinks: Sequence[Sink],
        options: PipelineOptions,
        on_frame: Callable[[FrameResult], None] | None,
    ):
        self._checkouts = [checkout for _, _, checkout, _ in lanes]
        self._check_labels(classifier)
        self.classifier = classifier
        self.options = options
        self._swap_lock = threading.Lock()
        self._pending: tuple[Classifier, threading.Event] | None = None
        self._notify = threading.Event()
        self._lanes = [
            _Lane(lane_id, source, checkout, options.capture, reference, self._notify)
            for lane_id, source, checkout, reference in lanes
        ]
        self._sinks = SinkDispatcher(sinks, options.sink_capacity)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="tillsight-inference", daemon=True)
        self._started = False
        self._on_frame = on_frame
        self.error: Exception | None = None

    # -- control -----------------------------------------------------------------------

    def start(self) -> _LanesPipeline:
        """Start capture, inference and sink threads; returns self."""
        if self._started:
            raise RuntimeError("a pipeline can be started once")
        self._started = True
        self._sinks.start()
        for lane in self._lanes:
            lane.metrics = MetricsRecorder()
            lane.capture.start()
        self._worker.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait until recorded sources have been processed to their end (or the pipeline stopped).

        Returns:
            True when the pipeline has finished, False on timeout.
        """
        self._worker.join(timeout)
        if self._worker.is_alive():
            return False
        self._shutdown()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading frames, finish the frames in hand, deliver queued events, end all threads."""
        self._stop.set()
        self._notify.set()
        for lane in self._lanes:
            lane.capture.stop(timeout)
        if self._worker.is_alive():
            self._worker.join(timeout)
        self._shutdown(timeout)

    def swap_classifier(self, classifier: Classifier, timeout: float = 30.0) -> Classifier:
        """Switch the pipeline to another loaded model between two frames, without stopping it.

        The worker thread takes ``classifier`` before its next turn: no frame meets a half-loaded
        model, every lane keeps its tray and votes (an item on the tray during the swap is
        reported once), and events decided from then on name the new bundle. Load and
        :meth:`~tillsight.Classifier.warm_up` it before, on any thread.

        Args:
            classifier: The loaded replacement.
            timeout: Seconds to wait for the worker to take it.

        Returns:
            The classifier it replaced, no longer used by the pipeline: close it.

        Raises:
            OptionsError: A lane's ``background_label`` is not a label of the new model.
            TimeoutError: The worker did not reach a frame boundary in time (the swap is withdrawn).
        """
        self._check_labels(classifier)
        taken = threading.Event()
        with self._swap_lock:
            if not self._worker.is_alive():  # not started, or finished: nothing is using the model
                old, self.classifier = self.classifier, classifier
                return old
            old = self.classifier
            self._pending = (classifier, taken)
        self._notify.set()
        deadline = time.monotonic() + timeout
        while not taken.wait(0.05):
            with self._swap_lock:
                if not self._worker.is_alive():  # the worker ended before its next turn
                    self._take_pending()
                if taken.is_set():
                    break
                if time.monotonic() >= deadline:
                    self._pending = None
                    raise TimeoutError(f"the pipeline did not reach a frame boundary within {timeout:.0f} s; model not swapped")
        return old

    def _check_labels(self, classifier: Classifier) -> None:
        for checkout in self._checkouts:
            label = checkout.background_label
            if label is not None and label not in classifier.labels:
                raise OptionsError(f"background_label {label!r} is not a label of the model ({', '.join(classifier.labels)})")

    def _take_pending(self) -> None:
        """Between two turns (or once the worker has ended): switch to a classifier handed over by :meth:`swap_classifier`."""
        if self._pending is not None:
            self.classifier, taken = self._pending
            self._pending = None
            taken.set()

    def _run_to_end(self) -> None:
        """Start and block until the sources end (Ctrl-C stops cleanly); raise what stopped them."""
        self.start()
        self.wait()

    def wait(self) -> None:
        """Block until the started pipeline's sources end (Ctrl-C stops cleanly), stop it, and raise what stopped it.

        Raises:
            SinkError: A sink that never drops (the audit log) failed.
            SourceError: A source could not be opened, or was lost for good.
            Exception: Whatever stopped the inference thread (a bug), as it was raised there.
        """
        try:
            while not self.join(timeout=0.5):
                pass
        except KeyboardInterrupt:
            logger.info("interrupted; stopping")
        finally:
            self.stop()
        failure = self._sinks.failure()  # also one that failed while the last events drained
        if failure is not None:
            raise failure
        if self.error is not None:
            raise self.error
        for lane in self._lanes:
            if lane.capture.state is SourceState.FAILED and lane.capture.error is not None:
                raise lane.capture.error

    def _lane_metrics(self, lane: _Lane) -> PipelineMetrics:
        return lane.metrics.snapshot(lane.capture.stats(), self._sinks.stats())

    def _shutdown(self, timeout: float = 5.0) -> None:
        for lane in self._lanes:
            lane.capture.stop(timeout)
        self._sinks.close(timeout)

    def __enter__(self) -> _LanesPipeline:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.stop()

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.options.metrics_interval
        next_log = time.monotonic() + interval
        try:
            while not self._stop.is_set():
                if self._pending is not None:
                    with self._swap_lock:
                        self._take_pending()
                turn = self._take_turn()
                if turn is None:  # every lane has finished
                    break
                if not turn:
                    self._notify.wait(0.1)
                    self._notify.clear()
                    continue
                self._process_turn(turn)
                if (failure := self._sinks.failure()) is not None:  # an audit log that cannot write: no frame more
                    raise failure
                if interval and time.monotonic() >= next_log:
                    for lane in self._lanes:
                        logger.info("%s%s", f"lane {lane.lane_id}: " if lane.lane_id else "", self._lane_metrics(lane).summary())
                    next_log = time.monotonic() + interval
        except Exception as exc:  # never leave a kiosk app waiting on a dead thread: run() raises it
            self.error = exc  # a bug stays what it is; only what the SDK raises on purpose is a TillsightError
            if isinstance(exc, TillsightError):  # run() raises it, with its fix: one line, not two
                logger.debug("pipeline stopped: %s", exc)
            else:
                logger.error("pipeline stopped: %s", summarize(exc), exc_info=True)
            for lane in self._lanes:
                lane.capture.stop()

    def _take_turn(self) -> list[tuple[_Lane, Frame]] | None:
        """The next frame of each lane that has one (a fair turn); None once every lane has finished."""
        max_frames, turn, running = self.options.max_frames, [], False
        for lane in self._lanes:
            if lane.done:
                continue
            if max_frames is not None and lane.processed >= max_frames:
                lane.capture.stop()
                lane.done = True
                continue
            running = True
            frame = lane.capture.get(timeout=0)
            if frame is None:
                lane.done = lane.capture.finished
                continue
            turn.append((lane, frame))
        return turn if running else None

    def _process_turn(self, turn: list[tuple[_Lane, Frame]]) -> None:
        steps = []
        for lane, frame in turn:
            try:
                steps.append(self._tray_step(lane, frame))
            except Exception as exc:
                self._frame_failed(lane, frame, exc)
        classify = [step for step in steps if step.tensor is not None]
        if classify:
            self._classify(classify)
        for step in steps:
            try:
                self._decide(step)
            except Exception as exc:
                self._frame_failed(step.lane, step.frame, exc)
        for lane, _ in turn:
            lane.processed += 1

    def _frame_failed(self, lane: _Lane, frame: Frame, exc: Exception) -> None:
        """One bad frame must not stop the checkout, but a tray region outside a lane's first frame is a setup error."""
        if lane.processed == 0 and isinstance(exc, SourceError):
            raise exc
        lane.metrics.count("frame_errors")
        _log_sparsely(lane.metrics.frame_errors, "frame %d skipped: %s", frame.frame_id, summarize(exc))

    def _check_frame_size(self, lane: _Lane, frame: Frame) -> None:
        """Say once per frame size when the tray region reaches past the frame, and re-learn the tray when the size changes."""
        height, width = frame.image.shape[:2]
        if lane.frame_size == (width, height):
            return
        where = f"lane {lane.lane_id}: " if lane.lane_id else ""
        if lane.frame_size is not None and not lane.stills:
            logger.warning(
                "%sthe frames are now %dx%d (were %dx%d, from frame %d on); learning the empty tray again",
                where,
                width,
                height,
                *lane.frame_size,
                frame.frame_id,
            )
            lane.monitor.relearn()
        lane.frame_size = (width, height)
        roi = lane.checkout.roi
        if roi is not None and (roi[0] + roi[2] > width or roi[1] + roi[3] > height) and roi[0] < width and roi[1] < height:
            x, y, w, h = roi
            logger.warning(
                "%sthe tray region %d,%d,%d,%d reaches past the %dx%d frame: only %dx%d of it is used; check --roi",
                where,
                x,
                y,
                w,
                h,
                width,
                height,
                min(w, width - x),
                min(h, height - y),
            )

    def _tray_step(self, lane: _Lane, frame: Frame) -> _Step:
        """Crop the tray, decide whether it is occupied, and prepare the model input if it must run."""
        started = time.perf_counter()
        self._check_frame_size(lane, frame)
        tray = crop_roi(frame.image, lane.checkout.roi)
        model_decides = lane.checkout.background_label is not None
        if lane.stills:  # a photo of one item: always classified, decided alone
            occupied: bool | None = True
        else:
            occupied = None if model_decides else lane.monitor.update(tray, empty_hint=not lane.logic.occupied)
        after_tray = time.perf_counter()
        lane.metrics.stage("tray", after_tray - started)
        step = _Step(lane, frame, tray, occupied, started)
        if model_decides or occupied:
            try:
                step.tensor = self.classifier.prepare(tray)
            except Exception as exc:  # InferenceError: an unusable image
                self._inference_failed(step, exc)
                return step
            lane.metrics.stage("preprocess", time.perf_counter() - after_tray)
        return step

    def _inference_failed(self, step: _Step, exc: Exception) -> None:
        metrics = step.lane.metrics
        metrics.count("inference_errors")
        _log_sparsely(metrics.inference_errors, "frame %d skipped: %s", step.frame.frame_id, summarize(exc))
        step.tensor = None
        step.occupied = False if step.occupied is None else step.occupied
        step.prediction = None
        step.started = -1.0  # nothing more to decide for this frame

    def _classify(self, steps: list[_Step]) -> None:
        """Run the model on the turn's frames: one call, so engines that overlap requests can."""
        tensors = [step.tensor for step in steps if step.tensor is not None]  # every step of a turn has its tensor
        started = time.perf_counter()
        try:
            scores = self.classifier.infer_many(tensors)
        except Exception as exc:  # InferenceError, or an untranslated error of a backend
            for step in steps:
                self._inference_failed(step, exc)
            return
        elapsed = time.perf_counter() - started
        for step, frame_scores in zip(steps, scores, strict=True):
            step.lane.metrics.stage("inference", elapsed)
            step.prediction = self.classifier.top(frame_scores, 1)[0]

    def _decide(self, step: _Step) -> None:
        lane, frame, metrics = step.lane, step.frame, step.lane.metrics
        if step.started < 0:  # the model failed on it
            metrics.frame_done(frame.captured_at, classified=False)
            return
        occupied, prediction = step.occupied, step.prediction
        if lane.checkout.background_label is not None and prediction is not None:
            occupied = not lane.logic.is_empty_prediction(prediction)
        decision_started = time.perf_counter()
        if lane.stills:
            events = lane.logic.decide_photo(frame.timestamp, prediction) if prediction is not None else []
        else:
            events = lane.logic.update(frame.timestamp, occupied, prediction) if occupied is not None else []
        version, sha256 = self.classifier.version, self.classifier.model_sha256  # the bundle that decided them
        events = [dataclasses.replace(event, bundle_version=version, model_sha256=sha256) for event in events]
        for event in events:  # occupied None: still learning the empty tray
            metrics.count("events")
            logger.debug("%s", event)
            self._sinks.submit(event)
        metrics.stage("decision", time.perf_counter() - decision_started)
        metrics.frame_done(frame.captured_at, classified=prediction is not None)
        if self._on_frame is not None:
            try:
                self._on_frame(FrameResult(frame, occupied, prediction, tuple(events), lane.lane_id, step.tray))
            except Exception as exc:
                logger.warning("on_frame callback failed on frame %d: %s", frame.frame_id, summarize(exc))


class CheckoutPipeline(_LanesPipeline):
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
        super().__init__([("", source, options.checkout, tray_reference)], classifier, sinks, options, on_frame)
        lane = self._lanes[0]
        self.capture, self.monitor, self.logic = lane.capture, lane.monitor, lane.logic

    def run(self) -> PipelineMetrics:
        """Start and block until the source ends (Ctrl-C stops cleanly). Returns the final metrics.

        Raises:
            SourceError: The source could not be opened, or was lost for good.
            Exception: Whatever stopped the inference thread (a bug), as it was raised there.
        """
        self._run_to_end()
        return self.metrics()

    def metrics(self) -> PipelineMetrics:
        """Current measurements (thread-safe)."""
        return self._lane_metrics(self._lanes[0])
