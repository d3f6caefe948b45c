"""Sources and videos for pipeline tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from tillsight.errors import SourceError
from tillsight.pipelines import CheckoutOptions, CheckoutPipeline, PipelineOptions, Source
from tillsight.testing import fake_classifier


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


class ListSource(Source):
    """Recorded frames from a list (None entries are read failures of a live source)."""

    def __init__(self, frames, fps=10.0, live=False):
        self.source_id = "list"
        self.live = live
        self.fps = fps
        self._frames = list(frames)
        self._next = 0

    def open(self) -> None:
        if self.live and self._next >= len(self._frames):
            raise SourceError("list source exhausted")

    def read(self):
        if self._next >= len(self._frames):
            return None
        image = self._frames[self._next]
        self._next += 1
        return image

    def media_time(self, frames_read):
        return None if self.live else frames_read / self.fps

    def close(self) -> None:
        pass


COLOURS = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 40), "yellow": (30, 210, 210)}
TRAY = (40, 20, 80, 80)


def colour_scores(tensor: np.ndarray) -> np.ndarray:
    """A fake model: the dominant colour channel wins clearly; no dominant channel, no confidence."""
    means = tensor[0].reshape(-1, 3).mean(axis=0)  # RGB means of the tray crop
    order = np.argsort(means)
    if means[order[-1]] - means[order[-2]] < 20:
        return np.array([[0.34, 0.33, 0.33]], np.float32)
    scores = np.full(3, 0.05, np.float32)
    scores[order[-1]] = 0.9
    return scores[None]


def colour_classifier():
    return fake_classifier(["red", "green", "blue"], colour_scores)  # RGB channel order


def tray_frames(sequence, fps=10, empty_s=1.0, item_s=2.0):
    """A grey counter, a lighter tray, coloured items placed on it and taken off, with sensor noise."""
    rng = np.random.default_rng(0)
    counter = np.full((120, 160, 3), 60, np.uint8)
    x, y, w, h = TRAY
    counter[y : y + h, x : x + w] = 170
    frames = [counter] * int(empty_s * fps)
    for name in sequence:
        with_item = counter.copy()
        with_item[y + 10 : y + h - 10, x + 10 : x + w - 10] = COLOURS[name]
        frames += [with_item] * int(item_s * fps) + [counter] * int(empty_s * fps)
    return [np.clip(f + rng.normal(0, 2, f.shape), 0, 255).astype(np.uint8) for f in frames]


def tray_video(tmp_path, sequence, fps=10, empty_s=1.0, item_s=2.0):
    """:func:`tray_frames` as an MJPG video file."""
    return write_video(tmp_path / "tray.avi", tray_frames(sequence, fps, empty_s, item_s), fps)


def run_pipeline(source, classifier, options=None, sinks=()):
    options = options or PipelineOptions(metrics_interval=0)
    events = []
    pipeline = CheckoutPipeline(source, classifier, [events.append, *sinks], options)
    metrics = pipeline.run()
    return events, metrics, pipeline


def options_for(roi=TRAY, **checkout):
    return PipelineOptions(checkout=CheckoutOptions(roi=roi, **checkout), metrics_interval=0)
