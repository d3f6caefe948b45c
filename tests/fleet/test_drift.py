"""Drift alerts on the demo video: none on the video as it is, one within 3 items when it is darkened, blurred or the
tray region is moved off the tray."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import tillsight
from tillsight.demo import ASSETS, demo_script
from tillsight.fleet.drift import BASELINE_STRETCHES, DriftMonitor
from tillsight.pipelines import CheckoutOptions, CheckoutPipeline, PipelineOptions, Source

SCRIPT = demo_script()
ROI = SCRIPT.roi


class _Frames(Source):
    def __init__(self, frames):
        self.frames, self.source_id, self.live, self.fps, self.stills = frames, "demo", False, 10.0, False

    def open(self):
        self.index = 0

    def read(self):
        if self.index >= len(self.frames):
            return None
        self.index += 1
        return self.frames[self.index - 1]

    def close(self):
        pass


@pytest.fixture(scope="module")
def demo_frames():
    capture = cv2.VideoCapture(str(ASSETS / SCRIPT.video))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    return frames


@pytest.fixture(scope="module")
def classifier():
    with tillsight.load(ASSETS / "classifier") as loaded:
        yield loaded


def _run(classifier, frames, monitor: DriftMonitor, roi=ROI) -> list[str]:
    """The events' labels; the monitor sees every frame's tray region."""
    events = []
    options = PipelineOptions(checkout=CheckoutOptions(roi=roi), metrics_interval=0)
    CheckoutPipeline(
        _Frames(frames), classifier, [events.append], options, on_frame=lambda r: monitor.frame(r.lane, r.tray, r.occupied)
    ).run()
    return [getattr(event, "label", "unknown") for event in events]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, classifier, demo_frames) -> Path:
    path = tmp_path_factory.mktemp("drift") / "baseline.json"
    monitor = DriftMonitor(path)
    _run(classifier, demo_frames, monitor)
    assert monitor.learned and path.is_file() and not monitor.alerts_raised
    return path


def test_the_demo_video_as_it_is_raises_no_alert_over_a_whole_run(classifier, demo_frames, baseline):
    monitor = DriftMonitor(baseline)
    labels = _run(classifier, demo_frames + demo_frames, monitor)  # two passes, 26 items
    assert len(labels) == 26 and monitor.stretches_seen >= 24 and monitor.alerts_raised == [] and monitor.alerts() == []


def test_the_baseline_is_learned_from_the_first_empty_stretches_and_kept(baseline):
    data = json.loads(baseline.read_text())
    brightness, sharpness = data["lanes"][""]
    assert data["stretches"] == BASELINE_STRETCHES and 0.6 < brightness < 0.8 and sharpness > 1.0


@pytest.mark.parametrize(
    ("change", "statistic", "sign"),
    [
        ("darkened 40%", "brightness_change", -1),
        ("blurred", "sharpness_change", -1),
        ("tray region moved off the tray", "brightness_change", -1),
    ],
)
def test_a_changed_camera_raises_an_alert_within_three_items(classifier, demo_frames, baseline, change, statistic, sign):
    roi = ROI
    if change == "darkened 40%":
        frames = [(frame * 0.6).astype(np.uint8) for frame in demo_frames]
    elif change == "blurred":
        frames = [cv2.GaussianBlur(frame, (0, 0), 2) for frame in demo_frames]
    else:
        frames, roi = demo_frames, (ROI[0] + 110, ROI[1], ROI[2], ROI[3])
    monitor = DriftMonitor(baseline)
    _run(classifier, frames, monitor, roi)
    assert monitor.alerts_raised, f"{change}: no alert"
    stretch, _, alert = monitor.alerts_raised[0]
    assert stretch <= 3 and alert.statistic == statistic and sign * alert.value >= alert.threshold, (change, alert)
