"""One turn of the inference thread: each lane's frame cropped, checked for an item, classified in one call, decided.

:class:`TurnWork` does the per-frame work of :class:`~tillsight.pipelines.pipeline.CheckoutPipeline`
and :class:`~tillsight.pipelines.lanes.MultiLanePipeline`; the pipeline owns the threads, the
lanes' lifecycle and which classifier runs (it hands the current one to every turn, so a swapped
classifier is taken between two turns).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from ..classifier import Classifier, Prediction
from ..errors import SourceError, summarize
from .capture import Capture, CaptureOptions
from .checkout import CheckoutLogic, CheckoutOptions, TrayMonitor
from .events import Event
from .frames import Frame
from .metrics import MetricsRecorder
from .sinks import SinkDispatcher
from .sources import Source

__all__ = ["FrameResult", "LaneState", "TurnWork", "crop_roi"]

logger = logging.getLogger("tillsight.pipelines.pipeline")  # the name kiosk logs have always shown


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


class LaneState:
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

    lane: LaneState
    frame: Frame
    tray: np.ndarray
    occupied: bool | None
    started: float
    tensor: np.ndarray | None = None
    prediction: Prediction | None = None


class TurnWork:
    """The per-frame work of a turn, on the inference thread."""

    def __init__(self, sinks: SinkDispatcher, on_frame: Callable[[FrameResult], None] | None):
        self._sinks = sinks
        self._on_frame = on_frame
        self._classifier: Classifier | None = None  # the one of the turn being processed

    def process_turn(self, turn: list[tuple[LaneState, Frame]], classifier: Classifier) -> None:
        """Crop, check, classify (one call for the turn's frames) and decide each lane's frame."""
        self._classifier = classifier
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

    def _frame_failed(self, lane: LaneState, frame: Frame, exc: Exception) -> None:
        """One bad frame must not stop the checkout, but a tray region outside a lane's first frame is a setup error."""
        if lane.processed == 0 and isinstance(exc, SourceError):
            raise exc
        lane.metrics.count("frame_errors")
        _log_sparsely(lane.metrics.frame_errors, "frame %d skipped: %s", frame.frame_id, summarize(exc))

    def _check_frame_size(self, lane: LaneState, frame: Frame) -> None:
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

    def _tray_step(self, lane: LaneState, frame: Frame) -> _Step:
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
                step.tensor = self._model.prepare(tray)
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
            scores = self._model.infer_many(tensors)
        except Exception as exc:  # InferenceError, or an untranslated error of a backend
            for step in steps:
                self._inference_failed(step, exc)
            return
        elapsed = time.perf_counter() - started
        for step, frame_scores in zip(steps, scores, strict=True):
            step.lane.metrics.stage("inference", elapsed)
            step.prediction = self._model.top(frame_scores, 1)[0]

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
        version, sha256 = self._model.version, self._model.model_sha256  # the bundle that decided them
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

    @property
    def _model(self) -> Classifier:
        assert self._classifier is not None  # set by process_turn before any frame work
        return self._classifier
