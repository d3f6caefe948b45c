"""One context manager for conversion steps.

``with conversion_step("calibrate", timings) as step:`` times the step, logs the artifact
and its size on success (set ``step.artifact``), and logs and re-raises on failure. The
durations end up in the manifest.

Inside :func:`shown` (a conversion with progress on, as the CLI runs it), each step also
shows itself while it runs: a spinner with the elapsed time on a terminal (steps that count
something show their own progress bar instead), then one line with its time when it ends,
so no step of a conversion is silent for minutes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Step", "conversion_step", "shown"]

logger = logging.getLogger(__name__)

_SHOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("tillsight_steps_shown", default=False)
_FRAMES = "|/-\\"


@dataclasses.dataclass
class Step:
    """What a running step reports back."""

    name: str
    artifact: Path | None = None
    seconds: float = 0.0


@contextlib.contextmanager
def shown(progress: bool) -> Iterator[None]:
    """Steps inside the block show a spinner while they run and a line with their time when they end (``progress``)."""
    token = _SHOWN.set(progress)
    try:
        yield
    finally:
        _SHOWN.reset(token)


class _Spinner:
    """``| name  12 s`` redrawn on stderr a few times a second while no progress bar is drawing there."""

    def __init__(self, name: str) -> None:
        self.name, self._stop = name, threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._spin, name="tillsight-step", daemon=True)
        self._width = 0

    def __enter__(self) -> _Spinner:
        if sys.stderr.isatty():
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()

    def _spin(self) -> None:
        from tqdm import tqdm

        frame = 0
        while not self._stop.wait(0.25):
            if len(getattr(tqdm, "_instances", ())):  # a bar of the step's own is drawing
                continue
            line = f"{_FRAMES[frame % len(_FRAMES)]} {self.name}  {time.perf_counter() - self._started:.0f} s"
            sys.stderr.write("\r" + line.ljust(self._width))
            sys.stderr.flush()
            self._width, frame = max(self._width, len(line)), frame + 1


@contextlib.contextmanager
def conversion_step(name: str, timings: dict[str, float]) -> Iterator[Step]:
    """Time and log one conversion step; record its duration in ``timings[name]``."""
    step = Step(name)
    start = time.perf_counter()
    logger.info("%s ...", name)
    show = _SHOWN.get()
    try:
        with _Spinner(name) if show else contextlib.nullcontext():
            yield step
    except BaseException as exc:
        step.seconds = time.perf_counter() - start
        logger.info("%s failed after %.1f s: %s", name, step.seconds, exc)  # the caller reports the error
        raise
    step.seconds = time.perf_counter() - start
    timings[name] = round(step.seconds, 3)
    if show:
        print(f"{name}: {step.seconds:.1f} s", file=sys.stderr, flush=True)
    if step.artifact is not None and step.artifact.exists():
        logger.info(
            "%s: wrote %s (%.1f kB) in %.1f s", name, step.artifact.name, step.artifact.stat().st_size / 1e3, step.seconds
        )
    else:
        logger.info("%s: done in %.1f s", name, step.seconds)
