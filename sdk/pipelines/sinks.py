"""Event sinks: plain callables that take one event.

Any ``callable(event)`` is a sink (that is the callback sink). Built in: :class:`JsonLines`
(one JSON object a line, to stdout or a file) and :class:`Basket` (counts recognized
products). The pipeline calls sinks on a thread of their own, so a slow or failing sink
never holds up the camera or the model (see :class:`SinkDispatcher`).
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from ..errors import summarize
from .events import Event, ProductRecognized, UnknownProduct

__all__ = ["Sink", "JsonLines", "Basket", "SinkDispatcher"]

logger = logging.getLogger(__name__)

Sink = Callable[[Event], None]


class JsonLines:
    """Writes each event as one JSON line, flushed at once (safe to tail)."""

    def __init__(self, target: str | Path | IO[str] | None = None):
        """Args:
        target: A file path (appended to), an open text stream, or None for stdout.
        """
        if target is None or hasattr(target, "write"):
            self._stream: IO[str] = target or sys.stdout  # type: ignore[assignment]
            self._owned = False
        else:
            self._stream = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._owned = True

    def __call__(self, event: Event) -> None:
        self._stream.write(json.dumps(event.to_dict()) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Close the file this sink opened (a stream it was given stays open)."""
        if self._owned:
            self._stream.close()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Basket:
    """Counts recognized products (and unknown items) as they are reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self.unknown = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, ProductRecognized):
                self._counts[event.label] += 1
            elif isinstance(event, UnknownProduct):
                self.unknown += 1

    def items(self) -> dict[str, int]:
        """Label → count, in the order products were first recognized."""
        with self._lock:
            return dict(self._counts)


class SinkDispatcher:
    """Delivers events to the sinks on its own thread, through a bounded queue.

    A sink that raises is logged and skipped for that event; a sink that blocks holds up
    only later events, and once ``capacity`` events wait, new ones are dropped and counted
    rather than stalling the pipeline.
    """

    def __init__(self, sinks: Sequence[Sink], capacity: int = 256):
        self.sinks = tuple(sinks)
        self._queue: queue.Queue[Event | None] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self.errors = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="tillsight-sinks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: Event) -> None:
        """Queue one event for every sink (never blocks)."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            logger.error("event sinks are %d events behind; dropped %s", self._queue.maxsize, event)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (waiting up to ``timeout`` seconds), then stop."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            logger.error("event sinks did not drain within %.1f s; giving up on %d events", timeout, self._queue.qsize())
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception as exc:  # logged before it is counted: a count seen means its line was written
                    logger.warning("sink %s failed on %s: %s", getattr(sink, "__name__", type(sink).__name__), event.kind, summarize(exc))
                    with self._lock:
                        self.errors += 1
