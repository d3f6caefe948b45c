"""Drift alerts on videos of a healthy and of a changed camera: how soon an alert comes, and whether a healthy one raises any.

    python bench/drift.py --data ../shared/data/grocery-store

The demo video, and three videos of other val photos on other trays (``samples/make_checkout_video.py``'s
scene with other seeds), each learn their baseline from their first empty-tray stretches and then
play on as they are (two passes), darkened, blurred, or with the tray region moved. Reported: items
played, the empty-tray stretch of the first alert, and the alerts raised. The section goes to
``bench/DRIFT.md`` and into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sections import publish

import tillsight
from tillsight.demo import ASSETS, demo_script
from tillsight.fleet.drift import BRIGHTNESS_THRESHOLD, SHARPNESS_THRESHOLD, DriftMonitor
from tillsight.pipelines import CheckoutOptions, CheckoutPipeline, PipelineOptions, Source

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "samples"))
SCRIPT = demo_script()
ROI = SCRIPT.roi


class _Frames(Source):
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.source_id, self.live, self.fps, self.stills = frames, "bench", False, 10.0, False

    def open(self) -> None:
        self.index = 0

    def read(self) -> np.ndarray | None:
        if self.index >= len(self.frames):
            return None
        self.index += 1
        return self.frames[self.index - 1]

    def close(self) -> None:
        pass


def _demo_frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(ASSETS / SCRIPT.video))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    return frames


def _other_video(data: Path, seed: int) -> list[np.ndarray]:
    """The demo's sequence of products with other val photos of them, on the tray of another seed."""
    import make_checkout_video as scene_video
    from checkout_scene import camera_noise, make_counter, photos_by_class

    rng = np.random.default_rng(seed)
    photos = photos_by_class(data, "val.txt", sorted({label for label, _ in scene_video.SEQUENCE}))
    counter = make_counter(rng)
    frames = [counter] * 20
    for label, which in scene_video.SEQUENCE:
        photo = cv2.imread(str(photos[label][(which + seed) % len(photos[label])]))
        frames += scene_video.placement_frames(counter, photo, rng) + [counter] * 10
    return [camera_noise(frame, rng) for frame in frames]


def _run(classifier, frames, monitor: DriftMonitor, roi=ROI) -> int:
    events: list = []
    options = PipelineOptions(checkout=CheckoutOptions(roi=roi), metrics_interval=0)
    on_frame = lambda r: monitor.frame(r.lane, r.tray, r.occupied)  # noqa: E731
    CheckoutPipeline(_Frames(frames), classifier, [events.append], options, on_frame=on_frame).run()
    return len(events)


def _changes(frames: list[np.ndarray]) -> dict[str, tuple[list[np.ndarray], tuple[int, int, int, int]]]:
    return {
        "as it is (two passes)": (frames + frames, ROI),
        "darkened 40%": ([(f * 0.6).astype(np.uint8) for f in frames], ROI),
        "darkened 20%": ([(f * 0.8).astype(np.uint8) for f in frames], ROI),
        "blurred (sigma 2 px)": ([cv2.GaussianBlur(f, (0, 0), 2) for f in frames], ROI),
        "blurred (sigma 1 px)": ([cv2.GaussianBlur(f, (0, 0), 1) for f in frames], ROI),
        "tray region 110 px right": (frames, (ROI[0] + 110, ROI[1], ROI[2], ROI[3])),
        "tray region 80 px down": (frames, (ROI[0], ROI[1] + 80, ROI[2], ROI[3])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "grocery-store")
    args = parser.parse_args()
    videos = {"demo video": _demo_frames()}
    videos.update({f"other photos, tray {seed}": _other_video(args.data, seed) for seed in (1, 2, 3)})
    rows = []
    with tillsight.load(ASSETS / "classifier") as classifier:
        for name, frames in videos.items():
            learner = DriftMonitor()
            _run(classifier, frames, learner)
            for change, (played, roi) in _changes(frames).items():
                monitor = DriftMonitor()
                monitor._baseline = learner._baseline  # noqa: SLF001 - the baseline this kiosk learned
                items = _run(classifier, played, monitor, roi)
                raised = monitor.alerts_raised
                first = f"stretch {raised[0][0]}: {raised[0][2].statistic} {raised[0][2].value:+.2f}" if raised else "none"
                kinds = ", ".join(sorted({alert.statistic for _, _, alert in raised})) or "-"
                rows.append(f"| {name} | {change} | {items} | {first} | {len(raised)} ({kinds}) |")
                print(rows[-1], flush=True)
    section = (
        f"""## Drift alerts (empty tray against the kiosk's baseline)

`python bench/drift.py` ({time.strftime("%Y-%m-%d")}): each video learns its baseline from its first 5 empty-tray
stretches, then plays as it is or changed. An alert is raised when the median of the last 3 stretches moves
{BRIGHTNESS_THRESHOLD:.0%} in brightness or {SHARPNESS_THRESHOLD:.0%} in sharpness; a stretch is the empty tray before an item.

| video | played | items | first alert | alerts (statistics) |
|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    publish(section, HERE / "DRIFT.md")


if __name__ == "__main__":
    main()
