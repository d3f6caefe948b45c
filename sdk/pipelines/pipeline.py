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

from ..classifier import Classifier
from ..errors import OptionsError, TillsightError, summarize
from .capture import CaptureOptions, SourceState
from .checkout import CheckoutOptions
from .frames import Frame
from .metrics import MetricsRecorder, PipelineMetrics
from .sinks import Sink, SinkDispatcher
from .sources import Source
from .turn import FrameResult, LaneState, TurnWork, crop_roi

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
            LaneState(lane_id, source, checkout, options.capture, reference, self._notify)
            for lane_id, source, checkout, reference in lanes
        ]
        self._sinks = SinkDispatcher(sinks, options.sink_capacity)
        self._work = TurnWork(self._sinks, on_frame)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="tillsight-inference", daemon=True)
        self._started = False
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

    def _lane_metrics(self, lane: LaneState) -> PipelineMetrics:
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
                self._work.process_turn(turn, self.classifier)
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

    def _take_turn(self) -> list[tuple[LaneState, Frame]] | None:
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
