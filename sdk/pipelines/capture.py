"""The capture thread: reads a source and hands frames on, never letting a live camera get ahead.

OpenCV buffers frames inside ``VideoCapture``; a consumer slower than the camera then
gets frames seconds old. The capture thread reads continuously and keeps only the newest
frame for the consumer (counting the ones it replaced) on live sources; recorded sources
go through a small blocking queue, so no frame of a file is lost unless asked. Live
sources that stop delivering, or deliver the same frame for too long (a frozen stream or
an unplugged USB camera on some drivers), are closed and reopened with exponential backoff.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time

import numpy as np

from ..errors import OptionsError, SourceError, summarize
from ..preprocess import to_bgr
from .frames import Frame
from .handoff import Handoff
from .sources import Source

__all__ = ["SourceState", "CaptureOptions", "CaptureStats", "Capture"]

logger = logging.getLogger(__name__)


class SourceState(enum.Enum):
    """Where a capture is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    ENDED = "ended"  # a recorded source was read to its end, or the capture was stopped
    FAILED = "failed"  # the source could not be opened, or did not come back


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    """How frames are read and handed on.

    Attributes:
        drop_frames: Keep only the newest frame for the consumer. None: on live sources only.
        pace: Deliver recorded sources at their own frame rate, as a camera would.
        speed: With ``pace``, play recorded sources this many times faster than recorded.
        queue_size: Frames buffered from recorded sources when not dropping.
        open_timeout: Seconds a live source may take to open at start before the capture fails.
        reconnect_min_s: First wait in seconds before reopening a lost live source; doubles each try.
        reconnect_max_s: Longest wait between two tries.
        max_reconnects: Tries per outage before giving up; None tries forever (a kiosk should).
        freeze_timeout: A live source repeating the very same frame, or delivering only
            empty frames, this many seconds is reopened; 0 turns the check off.
    """

    drop_frames: bool | None = None
    pace: bool = False
    speed: float = 1.0
    queue_size: int = 4
    open_timeout: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    max_reconnects: int | None = None
    freeze_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise OptionsError(f"queue_size must be at least 1, got {self.queue_size}")
        if not self.speed > 0:
            raise OptionsError(f"speed must be positive, got {self.speed}")
        for name in ("open_timeout", "reconnect_min_s", "reconnect_max_s", "freeze_timeout"):
            if getattr(self, name) < 0:
                raise OptionsError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise OptionsError(f"max_reconnects must be None or at least 0, got {self.max_reconnects}")


@dataclasses.dataclass(frozen=True)
class CaptureStats:
    """Counters of one capture."""

    state: SourceState
    frames_read: int
    frames_dropped: int  # replaced by a newer frame before the consumer took them
    reconnects: int  # successful reopenings of a lost source
    read_failures: int
    freezes: int  # times a frozen stream was detected
    frames_converted: int  # grayscale or BGRA frames turned into BGR
    frames_empty: int  # frames with no pixels, skipped
    resolution_changes: int  # times the frame size changed mid-stream


class Backoff:
    """Exponential waits between tries: ``min_s``, doubled after each failed try, at most ``max_s``."""

    def __init__(self, min_s: float, max_s: float):
        self.wait_s = min_s
        self._max_s = max_s

    def failed(self) -> float:
        """After a failed try: the next wait (twice the last, at most ``max_s``)."""
        self.wait_s = min(self.wait_s * 2, self._max_s)
        return self.wait_s


@dataclasses.dataclass
class _Counts:
    """What a capture counted; changed on its thread under the capture's lock."""

    frames_read: int = 0
    reconnects: int = 0
    read_failures: int = 0
    freezes: int = 0
    frames_converted: int = 0
    frames_empty: int = 0
    resolution_changes: int = 0


class _Connection:
    """What the reader knows about one connection to the source; a reconnect starts a new one."""

    def __init__(self) -> None:
        self.opened_at = self.last_change = time.monotonic()
        self.frames = 0  # read since it opened: a file's media time comes from this count
        self.previous: np.ndarray | None = None  # a sparse sample of the last distinct picture

    def unchanged_for(self, image: np.ndarray, now: float) -> float:
        """Seconds the picture has stayed the same (0 when this one differs from the last)."""
        sample = image[::8, ::8]
        if self.previous is not None and self.previous.shape == sample.shape and np.array_equal(self.previous, sample):
            return now - self.last_change
        self.last_change, self.previous = now, sample.copy()
        return 0.0


class Capture:
    """Reads one source on its own thread.

    Use ``start()``, then ``get()`` until it returns None with ``finished`` true; ``stop()``
    ends it early. ``state`` and ``stats()`` can be read from any thread.
    """

    def __init__(self, source: Source, options: CaptureOptions = CaptureOptions(), notify: threading.Event | None = None):
        """Args:
        source: The source to read.
        options: Dropping, pacing, reconnection and freeze detection.
        notify: Set whenever a frame is handed over or the capture ends (for a consumer
            that serves several captures from one thread).
        """
        self.source = source
        self.options = options
        drop = source.live if options.drop_frames is None else options.drop_frames
        self._handoff = Handoff(1 if drop else options.queue_size, drop_oldest=drop, notify=notify)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tillsight-capture[{source.source_id}]", daemon=True)
        self._lock = threading.Lock()
        self._state = SourceState.STARTING
        self.error: SourceError | None = None
        self._counts = _Counts()

    # -- consumer side -------------------------------------------------------------

    def start(self) -> None:
        """Start the capture thread."""
        self._thread.start()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None after ``timeout`` seconds or once the capture has finished."""
        return self._handoff.get(timeout)

    @property
    def finished(self) -> bool:
        """True once the source ended or failed and every delivered frame was taken."""
        return self._handoff.exhausted

    @property
    def state(self) -> SourceState:
        with self._lock:
            return self._state

    def stats(self) -> CaptureStats:
        """Current counters."""
        with self._lock:
            return CaptureStats(state=self._state, frames_dropped=self._handoff.dropped, **dataclasses.asdict(self._counts))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and release the source (waits up to ``timeout`` seconds for the thread)."""
        self._stop.set()
        self._handoff.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- capture thread --------------------------------------------------------------

    def _count(self, name: str) -> int:
        """Add one to the counter ``name``; returns its value before."""
        with self._lock:
            before: int = getattr(self._counts, name)
            setattr(self._counts, name, before + 1)
            return before

    def _set_state(self, state: SourceState) -> None:
        with self._lock:
            if state is not self._state:  # a failure's reason is in self.error (the pipeline's run() raises it)
                level = logging.WARNING if state is SourceState.FAILED else logging.INFO
                logger.log(level, "source %s: %s", self.source.source_id, state.value)
            self._state = state

    def _run(self) -> None:
        try:
            if self._open_at_start():
                self._read_loop()
        except Exception as exc:  # a source implementation bug must not leave the consumer waiting
            self.error = SourceError(f"source {self.source.source_id} failed: {summarize(exc)}")
            logger.debug("%s", self.error, exc_info=True)
            self._set_state(SourceState.FAILED)
        finally:
            self.source.close()
            self._handoff.close()

    def _open_at_start(self) -> bool:
        deadline = time.monotonic() + (self.options.open_timeout if self.source.live else 0.0)
        backoff = Backoff(self.options.reconnect_min_s, self.options.reconnect_max_s)
        attempts = 0
        while True:
            try:
                self.source.open()
                self._set_state(SourceState.RUNNING)
                return True
            except SourceError as exc:
                if time.monotonic() + backoff.wait_s > deadline or self._stop.is_set():
                    self.error = exc  # raised by the pipeline's run(), which says it once
                    self._set_state(SourceState.FAILED)
                    return False
                attempts += 1
                if attempts == 1:  # the retries quietly: the error, with its hint, is said once when they end
                    logger.warning(
                        "source %s does not open yet; retrying for up to %.0f s",
                        self.source.source_id,
                        max(0.0, deadline - time.monotonic()),
                    )
                else:
                    logger.debug("%s; retrying in %.1f s", exc, backoff.wait_s)
            if self._stop.wait(backoff.wait_s):
                return False
            backoff.failed()

    def _read_loop(self) -> None:
        source, options = self.source, self.options
        frozen_after = options.freeze_timeout if source.live else 0.0
        connection = _Connection()
        size: tuple[int, ...] | None = None
        while not self._stop.is_set():
            image = source.read()
            now = time.monotonic()
            if image is None:
                if not source.live:
                    self._set_state(SourceState.ENDED)
                    return
                self._count("read_failures")
                if not self._reconnect("no frame"):
                    return
                connection = _Connection()
                continue
            if image.size == 0:  # a driver hiccup: skip it; on a live source, a run of them is a freeze
                self._count("frames_empty")
                if frozen_after and now - connection.last_change > frozen_after:
                    if not self._reconnect_frozen(f"only empty frames for {frozen_after:g} s"):
                        return
                    connection = _Connection()
                continue
            size = self._note_size(size, image)
            if frozen_after and connection.unchanged_for(image, now) > frozen_after:
                if not self._reconnect_frozen(f"frozen: the same frame for {frozen_after:g} s"):
                    return
                connection = _Connection()
                continue
            image = self._as_bgr(image)
            if image is not None and not self._hand_off(image, connection):
                return
        self._set_state(SourceState.ENDED)

    def _note_size(self, size: tuple[int, ...] | None, image: np.ndarray) -> tuple[int, ...]:
        """The frame's size; a change from the last one is counted and logged."""
        if size is not None and image.shape[:2] != size and not self.source.stills:  # photos differ in size
            self._count("resolution_changes")
            logger.warning("source %s changed resolution from %s to %s", self.source.source_id, size, image.shape[:2])
        return image.shape[:2]

    def _as_bgr(self, image: np.ndarray) -> np.ndarray | None:
        """A 3-channel BGR frame (grey or BGRA converted and counted); None, with a warning, for what cannot be."""
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        try:
            converted = to_bgr(image)
        except ValueError as exc:
            logger.warning("source %s: skipping a frame: %s", self.source.source_id, exc)
            return None
        self._count("frames_converted")
        return converted

    def _hand_off(self, image: np.ndarray, connection: _Connection) -> bool:
        """Number the frame, wait for its media time when pacing, and queue it; False when stopped meanwhile."""
        media_time = self.source.media_time(connection.frames)
        connection.frames += 1
        if self.options.pace and media_time is not None:
            wait = connection.opened_at + media_time / self.options.speed - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return False
        frame_id = self._count("frames_read")
        timestamp = media_time if media_time is not None else time.time()
        self._handoff.put(Frame(image, frame_id, timestamp, self.source.source_id), self._stop)
        return True

    def _reconnect_frozen(self, reason: str) -> bool:
        self._count("freezes")
        return self._reconnect(reason)

    def _reconnect(self, reason: str) -> bool:
        """Close and reopen a lost live source with backoff; False when it gave up or was stopped."""
        options = self.options
        self._set_state(SourceState.RECONNECTING)
        logger.warning("source %s lost (%s); reconnecting", self.source.source_id, reason)
        self.source.close()
        backoff, tries = Backoff(options.reconnect_min_s, options.reconnect_max_s), 0
        while not self._stop.is_set():
            if options.max_reconnects is not None and tries >= options.max_reconnects:
                self.error = SourceError(
                    f"source {self.source.source_id} lost ({reason}) and not back after {tries} tries; "
                    "check the camera or raise max_reconnects"
                )
                self._set_state(SourceState.FAILED)
                return False
            if self._stop.wait(backoff.wait_s):
                break
            tries += 1
            try:
                self.source.open()
            except SourceError as exc:
                logger.warning("%s (try %d); next in %.1f s", exc, tries, backoff.failed())
                continue
            self._count("reconnects")
            self._set_state(SourceState.RUNNING)
            return True
        self._set_state(SourceState.ENDED)
        return False
