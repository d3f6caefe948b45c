"""The process ``tillsight benchmark`` starts for one bundle: load, classify, time, report one JSON line.

    python -m tillsight._benchmark_worker BUNDLE --frames 100 [--threads N] [--source IMAGE|VIDEO]

The line is a :class:`WorkerReport`: ``first_result_unix`` lets the parent compute process start to
first result; ``peak_rss_bytes`` is this process's high-water mark; a TillsightError is reported in
``error`` and ``kind``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

#: Untimed runs before each timed loop (caches, lazy allocations).
WARMUP = 5
CAMERA_FRAME = (720, 1280)  # height, width of the synthetic frame
VIDEO_FRAMES = 30  # decoded ahead and classified in turn (more would only raise the peak RSS)


class WorkerReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker measured (or the error that stopped it): its one line of stdout."""

    peak_rss_bytes: int
    imported_tensorflow: bool  # the device side never should
    error: str = ""  # a TillsightError's message; the fields below are then empty
    kind: str = ""  # its class name
    first_result_unix: float = 0.0
    engine: str = ""
    fallback_reason: str | None = None
    threads: int | None = None
    source: str = ""  # what was classified
    classify_s: tuple[float, ...] = ()  # each timed classify() on a frame
    invoke_s: tuple[float, ...] = ()  # each timed inference on a prepared tensor


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark. VmHWM, not getrusage: ru_maxrss survives exec on Linux,
    so a child of a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def read_frames(source: str | None, count: int) -> tuple[list[Any], str]:
    """Frames to classify, and what they are."""
    import cv2
    import numpy as np

    from tillsight.errors import SourceError

    if source is None:
        frame = np.random.default_rng(0).integers(0, 256, (*CAMERA_FRAME, 3), dtype=np.uint8)
        return [frame], f"synthetic {CAMERA_FRAME[1]}x{CAMERA_FRAME[0]} frame"
    image: Any = cv2.imread(source, cv2.IMREAD_COLOR)
    if image is not None:
        return [image], f"{Path(source).name} ({image.shape[1]}x{image.shape[0]})"
    capture = cv2.VideoCapture(source)
    frames: list[Any] = []
    while len(frames) < min(count, VIDEO_FRAMES):
        ok, decoded = capture.read()
        if not ok:
            break
        frames.append(decoded)
    capture.release()
    if not frames:
        raise SourceError(f"benchmark source {source} is neither an image nor a video OpenCV can decode")
    return frames, f"{Path(source).name} ({len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]})"


def timed(function: Callable[[Any], object], inputs: list[Any], runs: int, warmup: int = WARMUP) -> list[float]:
    """Seconds of ``runs`` calls, cycling over ``inputs``, after ``warmup`` untimed calls: the one timing loop
    behind every latency figure (the conversion's host latency, ``tillsight benchmark`` and the bench)."""
    for k in range(warmup):
        function(inputs[k % len(inputs)])
    seconds = []
    for k in range(runs):
        start = time.perf_counter()
        function(inputs[k % len(inputs)])
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(bundle: str, frames: int, threads: int | None, source: str | None) -> dict[str, Any]:
    """The fields of a :class:`WorkerReport` measured on ``bundle``."""
    import tillsight

    images, described = read_frames(source, frames)  # a kiosk opens its camera before the first result too
    with tillsight.load(bundle, threads=threads) as classifier:
        classifier.classify(images[0], top_k=1)
        first = time.time()
        classify_s = timed(lambda image: classifier.classify(image, top_k=1), images, frames)
        tensors = [classifier.prepare(image) for image in images[:8]]
        invoke_s = timed(classifier.infer, tensors, frames)
        backend = classifier.backend
        return {
            "first_result_unix": first,
            "engine": classifier.engine,
            "fallback_reason": backend.fallback_reason,
            "threads": getattr(backend, "threads", threads),
            "source": described,
            "classify_s": tuple(classify_s),
            "invoke_s": tuple(invoke_s),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--source")
    args = parser.parse_args()
    from tillsight.errors import TillsightError

    try:
        measured = measure(args.bundle, args.frames, args.threads, args.source)
    except TillsightError as exc:
        measured = {"error": str(exc), "kind": type(exc).__name__}
    report = WorkerReport(peak_rss_bytes=peak_rss_bytes(), imported_tensorflow="tensorflow" in sys.modules, **measured)
    print(msgspec.json.encode(report).decode())


if __name__ == "__main__":
    main()
