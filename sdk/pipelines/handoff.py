"""Frames between a capture thread and its consumer: bounded, newest-wins on live sources or blocking on recorded ones."""

from __future__ import annotations

import collections
import threading
import time

from .frames import Frame

__all__ = ["Handoff"]


class Handoff:
    """Frames between the capture thread and the consumer: bounded, newest-wins or blocking."""

    def __init__(self, capacity: int, drop_oldest: bool, notify: threading.Event | None = None):
        self._frames: collections.deque[Frame] = collections.deque()
        self._capacity = capacity
        self._drop_oldest = drop_oldest
        self._condition = threading.Condition()
        self._closed = False
        self._notify = notify  # set on every new frame and at the end (a consumer of several captures waits on it)
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event) -> None:
        """Queue ``frame``: drop the oldest when full and newest-wins, else wait for room (or ``stop``)."""
        with self._condition:
            while len(self._frames) >= self._capacity:
                if self._drop_oldest:
                    self._frames.popleft()
                    self.dropped += 1
                    break
                if stop.is_set() or self._closed:
                    return
                self._condition.wait(0.1)
            self._frames.append(frame)
            self._condition.notify_all()
        if self._notify is not None:
            self._notify.set()

    def get(self, timeout: float | None) -> Frame | None:
        """The oldest queued frame; None after ``timeout`` seconds, or once closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while not self._frames:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._condition.wait(remaining)
            frame = self._frames.popleft()
            self._condition.notify_all()
            return frame

    def close(self) -> None:
        """No more frames will come: a waiting consumer wakes up."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._notify is not None:
            self._notify.set()

    @property
    def exhausted(self) -> bool:
        """Closed, and every frame taken."""
        with self._condition:
            return self._closed and not self._frames
