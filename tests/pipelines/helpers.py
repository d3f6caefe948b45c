"""Sources and videos for pipeline tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from tillsight.errors import SourceError
from tillsight.pipelines import Source


def numbered(index: int, shape=(48, 64)) -> np.ndarray:
    """A frame that carries its own index in its first three bytes."""
    image = np.full((*shape, 3), 90, np.uint8)
    image[0, 0] = [index & 255, (index >> 8) & 255, (index >> 16) & 255]
    image[1:, :, 0] = index % 200  # the picture changes too, so it is not a frozen stream
    return image


def number_of(image: np.ndarray) -> int:
    b0, b1, b2 = (int(v) for v in image[0, 0])
    return b0 | b1 << 8 | b2 << 16


class ScriptedSource(Source):
    """A fake live camera: numbered frames at ``fps``; each open delivers ``per_open[n]`` frames
    (None: endless) before reads fail; opens beyond ``opens_allowed`` raise; ``frozen`` repeats one frame."""

    def __init__(self, per_open=(None,), fps=500.0, live=True, opens_allowed=None, frozen_opens=(), convert=None):
        self.source_id = "scripted"
        self.live = live
        self.fps = fps
        self._per_open = list(per_open)
        self._opens_allowed = opens_allowed
        self._frozen_opens = set(frozen_opens)
        self._convert = convert
        self.opens = 0
        self.closes = 0
        self._left = None
        self._next = 0
        self.lock = threading.Lock()

    def open(self) -> None:
        if self._opens_allowed is not None and self.opens >= self._opens_allowed:
            raise SourceError("scripted camera is unplugged")
        plan = self._per_open[min(self.opens, len(self._per_open) - 1)]
        self._frozen = self.opens in self._frozen_opens
        self.opens += 1
        self._left = plan

    def read(self):
        time.sleep(1.0 / self.fps)
        if self._left is not None:
            if self._left <= 0:
                return None
            self._left -= 1
        image = numbered(0 if self._frozen else self._next)
        self._next += 1
        return self._convert(image) if self._convert else image

    def media_time(self, frames_read):
        return None if self.live else frames_read / self.fps

    def close(self) -> None:
        self.closes += 1


def write_video(path: Path, frames, fps: int = 10) -> Path:
    """Frames (BGR, all one size) into an MJPG .avi, which every OpenCV build can write and read."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
