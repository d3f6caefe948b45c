"""One context manager for conversion steps.

``with conversion_step("calibrate", timings) as step:`` times the step, logs the artifact
and its size on success (set ``step.artifact``), and logs and re-raises on failure. The
durations end up in the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Step", "conversion_step"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Step:
    """What a running step reports back."""

    name: str
    artifact: Path | None = None
    seconds: float = 0.0


@contextlib.contextmanager
def conversion_step(name: str, timings: dict[str, float]) -> Iterator[Step]:
    """Time and log one conversion step; record its duration in ``timings[name]``."""
    step = Step(name)
    start = time.perf_counter()
    logger.info("%s ...", name)
    try:
        yield step
    except BaseException as exc:
        step.seconds = time.perf_counter() - start
        logger.info("%s failed after %.1f s: %s", name, step.seconds, exc)  # the caller reports the error
        raise
    step.seconds = time.perf_counter() - start
    timings[name] = round(step.seconds, 3)
    if step.artifact is not None and step.artifact.exists():
        logger.info("%s: wrote %s (%.1f kB) in %.1f s", name, step.artifact.name, step.artifact.stat().st_size / 1e3, step.seconds)
    else:
        logger.info("%s: done in %.1f s", name, step.seconds)
