"""Frames: what a source hands to the pipeline."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

__all__ = ["Frame"]


@dataclasses.dataclass(frozen=True)
class Frame:
    """One camera frame.

    Attributes:
        image: BGR uint8 ``HxWx3`` array as OpenCV decodes it.
        frame_id: 0, 1, 2... in the order the source delivered frames (dropped ones included).
        timestamp: Seconds. Media time for video files and image folders (frame index / fps),
            wall-clock time (``time.time()``) for live sources. Decision logic measures
            durations in this clock, so a video gives the same events at any processing speed.
        source_id: Which source the frame came from (camera index, URL or path).
        captured_at: ``time.monotonic()`` when the frame was read; frame age is measured from it.
    """

    image: np.ndarray = dataclasses.field(repr=False)
    frame_id: int
    timestamp: float
    source_id: str
    captured_at: float = dataclasses.field(default_factory=time.monotonic, compare=False)
