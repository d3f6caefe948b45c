"""Event sinks: plain callables that take one event.

Any ``callable(event)`` is a sink (that is the callback sink). Built in: :class:`JsonLines`
(one JSON object a line, to stdout or a file) and :class:`Basket` (counts recognized
products); :class:`tillsight.pipelines.mqtt.MqttSink` publishes to a broker through a durable
outbox. The pipeline calls each sink on a thread of its own, so a slow or failing sink never
holds up the camera, the model or the other sinks (see :class:`SinkDispatcher`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from ..errors import SinkError, summarize
from .events import Event, ProductRecognized, UnknownProduct

__all__ = ["Sink", "JsonLines", "Basket", "SinkDispatcher", "SinkStats", "SinkWorker", "sink_name"]

logger = logging.getLogger(__name__)

Sink = Callable[[Event], None]


class JsonLines:
    """Writes each event as one JSON line, flushed at once (safe to tail): the audit log.

    It never drops an event (``never_drop``): when it falls behind, the pipeline waits for it.
    A file it opens is also synced to disk after each event, so a power cut loses none.
    """

    never_drop = True
    name = "jsonl"

    def __init__(self, target: str | Path | IO[str] | None = None):
        """Args:
        target: A file path (appended to), an open text stream, or None for stdout.
        """
        if target is None or hasattr(target, "write"):
            self._stream: IO[str] = target or sys.stdout  # type: ignore[assignment]
            self._owned = False
            self.where = f"the audit log ({getattr(self._stream, 'name', 'a stream')})"
            return
        path = Path(target)
        self.where = f"the audit log {path}"
        if path.is_dir():
            raise SinkError(f"--jsonl {path} is a folder; name a file in it, e.g. {path / 'events.jsonl'}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise SinkError(f"--jsonl {path} cannot be opened for writing ({exc.strerror or exc})") from exc
        self._owned = True

    def __call__(self, event: Event) -> None:
        self._stream.write(json.dumps(event.to_dict()) + "\n")
        self._stream.flush()
        if self._owned:
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Close the file this sink opened (a stream it was given stays open)."""
        if self._owned:
            try:
                self._stream.close()
            except OSError as exc:  # what it could not write is counted and said by the pipeline
                logger.debug("closing %s: %s", self.where, exc)

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Basket:
    """Counts recognized products (and unknown items) as they are reported.

    Args:
        lane: Count only this lane's events (a multi-lane kiosk's basket per lane); None: all.
    """

    def __init__(self, lane: str | None = None) -> None:
        self.lane = lane
        self.name = "basket" if lane is None else f"basket[{lane}]"
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self.unknown = 0

    def __call__(self, event: Event) -> None:
        if self.lane is not None and getattr(event, "lane", None) != self.lane:
            return
        with self._lock:
            if isinstance(event, ProductRecognized):
                self._counts[event.label] += 1
            elif isinstance(event, UnknownProduct):
                self.unknown += 1

    def items(self) -> dict[str, int]:
        """Label → count, in the order products were first recognized."""
        with self._lock:
            return dict(self._counts)


@dataclasses.dataclass(frozen=True)
class SinkStats:
    """How one sink is keeping up.

    Attributes:
        name: The sink's name (its ``name`` attribute, else its function or class name).
        delivered: Events the sink took without raising.
        errors: Events on which the sink raised (logged and skipped).
        dropped: Events not given to it because it fell ``capacity`` events behind.
        waiting: Events queued for it now.
        never_drops: Whether the pipeline waits for this sink rather than drop (audit sinks).
    """

    name: str
    delivered: int
    errors: int
    dropped: int
    waiting: int
    never_drops: bool


def sink_name(sink: Sink) -> str:
    """A sink's name in logs and metrics: its ``name`` attribute, else its function or class name."""
    name = getattr(sink, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(sink, "__name__", None) or type(sink).__name__


class SinkWorker:
    """One sink's delivery path: its own bounded queue and thread.

    A sink that hangs holds up only its own queue. Once ``capacity`` events wait for it, new
    events are dropped for this sink alone and counted, with a log line, unless the sink says
    ``never_drop = True`` (an audit log, an outbox): then :meth:`submit` waits for room, and
    the pipeline slows down rather than lose an event.
    """

    def __init__(self, sink: Sink, name: str, capacity: int = 256):
        self.sink, self.name = sink, name
        self.never_drops = bool(getattr(sink, "never_drop", False))
        self._queue: queue.Queue[Event | None] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self.delivered = self.errors = self.dropped = 0
        self.failure: Exception | None = None  # what stopped a never-dropping sink; it takes no event after it
        self._behind = False  # logged once per stretch of falling behind, not once per event
        self._thread = threading.Thread(target=self._run, name=f"tillsight-sink-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: Event) -> None:
        """Queue one event: never blocks, except for a never-dropping sink that is full."""
        try:
            self._queue.put_nowait(event)
            self._behind = False
            return
        except queue.Full:
            pass
        if self.never_drops:
            if not self._behind:
                logger.warning(
                    "sink %s is %d events behind; waiting for it (it never drops events)", self.name, self._queue.maxsize
                )
            self._behind = True
            self._queue.put(event)
            return
        with self._lock:
            self.dropped += 1
        if not self._behind or self.dropped % 100 == 0:
            logger.error(
                "sink %s is %d events behind; dropping events for it (%d so far)", self.name, self._queue.maxsize, self.dropped
            )
        self._behind = True

    def close(self, deadline: float) -> None:
        """Let the sink finish what is queued until ``deadline`` (``time.monotonic()``), then stop."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            logger.error("sink %s did not drain in time; giving up on %d events", self.name, self._queue.qsize())
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            logger.error("sink %s did not finish in time; giving up on %d events", self.name, self._queue.qsize())

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self.name, self.delivered, self.errors, self.dropped, self._queue.qsize(), self.never_drops)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            if self.failure is not None:  # counted as not written; the pipeline is stopping for it
                with self._lock:
                    self.errors += 1
                continue
            try:
                self.sink(event)
            except Exception as exc:  # logged before it is counted: a count seen means its line was written
                if self.never_drops:
                    logger.error("sink %s cannot write (%s); it never drops events, so the run stops", self.name, summarize(exc))
                    self.failure = exc
                else:
                    logger.warning("sink %s failed on %s: %s", self.name, event.kind, summarize(exc))
                with self._lock:
                    self.errors += 1
            else:
                with self._lock:
                    self.delivered += 1


class SinkDispatcher:
    """Delivers each event to every sink, each sink on a :class:`SinkWorker` of its own.

    A sink that raises is logged and skipped for that event; one that hangs delays only its
    own events; one that falls ``capacity`` events behind loses new events (counted per sink),
    except a sink with ``never_drop = True``, which the pipeline waits for.
    """

    def __init__(self, sinks: Sequence[Sink], capacity: int = 256):
        self.sinks = tuple(sinks)
        names = [sink_name(sink) for sink in self.sinks]
        unique = [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)]
        self.workers = tuple(SinkWorker(sink, name, capacity) for sink, name in zip(self.sinks, unique, strict=True))

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def submit(self, event: Event) -> None:
        """Queue one event for every sink."""
        for worker in self.workers:
            worker.submit(event)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (all sinks together waiting up to ``timeout`` seconds), then stop."""
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.close(deadline)

    def stats(self) -> tuple[SinkStats, ...]:
        return tuple(worker.stats() for worker in self.workers)

    def failure(self) -> SinkError | None:
        """Why a never-dropping sink stopped taking events, naming it and what it did not write; None while all write."""
        for worker in self.workers:
            if worker.failure is not None:
                where = getattr(worker.sink, "where", worker.name)
                stats = worker.stats()
                unwritten = stats.errors + stats.waiting
                failure = worker.failure
                reason = failure.strerror if isinstance(failure, OSError) and failure.strerror else summarize(failure)
                return SinkError(
                    f"{where} cannot be written ({reason}): {unwritten} event(s) were not written to it "
                    f"and the run stopped; events the other sinks took (an MQTT outbox) are kept"
                )
        return None

    @property
    def errors(self) -> int:
        return sum(stats.errors for stats in self.stats())

    @property
    def dropped(self) -> int:
        return sum(stats.dropped for stats in self.stats())
