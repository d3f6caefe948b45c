"""Fault injection: broken cameras, a failing model, overwhelmed sinks. The checkout keeps going."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import cv2
import numpy as np

from tillsight.pipelines import Basket, CaptureOptions, CheckoutOptions, CheckoutPipeline, JsonLines, PipelineOptions
from tillsight.testing import fake_classifier

from .helpers import ListSource, colour_classifier, colour_scores, run_pipeline, tray_frames

WHOLE_FRAME = PipelineOptions(checkout=CheckoutOptions(roi=None), metrics_interval=0)


def labels_of(events):
    return [getattr(e, "label", "unknown") for e in events]


def test_empty_frames_are_skipped_and_counted():
    frames = tray_frames(["red", "blue"])
    empty = np.zeros((0, 0, 3), np.uint8)
    with_gaps = [frame if k % 7 else empty for k, frame in enumerate(frames)]
    events, metrics, _ = run_pipeline(ListSource(with_gaps), colour_classifier(), WHOLE_FRAME)
    assert labels_of(events) == ["red", "blue"]
    assert metrics.frames_empty == len(frames[::7]) and metrics.frame_errors == 0


def test_a_live_source_delivering_only_empty_frames_is_reconnected():
    frames = [np.zeros((0, 0, 3), np.uint8)] * 400 + tray_frames(["green"])
    options = PipelineOptions(
        checkout=CheckoutOptions(roi=None),
        metrics_interval=0,
        capture=CaptureOptions(freeze_timeout=0.05, reconnect_min_s=0.01, drop_frames=False),
    )

    class SlowList(ListSource):
        def read(self):
            threading.Event().wait(0.001)
            return super().read()

    events = []
    with CheckoutPipeline(SlowList(frames, live=True), colour_classifier(), [events.append], options) as pipeline:
        for _ in range(200):
            if events:
                break
            threading.Event().wait(0.05)
        metrics = pipeline.metrics()
    assert metrics.freezes >= 1 and metrics.reconnects >= 1
    assert labels_of(events) == ["green"]


def test_a_resolution_change_mid_stream_is_counted_and_survived():
    small = tray_frames(["red", "blue"])
    large = [cv2.resize(frame, (320, 240)) for frame in tray_frames(["green", "red"])]
    events, metrics, _ = run_pipeline(ListSource(small + large), colour_classifier(), WHOLE_FRAME)
    assert labels_of(events) == ["red", "blue", "green", "red"]
    assert metrics.resolution_changes == 1 and metrics.frame_errors == 0


def test_bgra_and_grayscale_frames_are_converted_and_counted():
    bgra = [cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA) for frame in tray_frames(["blue"])]
    gray = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in tray_frames(["red"])]
    events, metrics, _ = run_pipeline(ListSource(bgra + gray), colour_classifier(), WHOLE_FRAME)
    assert metrics.frames_converted == len(bgra) + len(gray)
    assert labels_of(events)[0] == "blue"  # colour survives BGRA; a grey item is no colour at all
    assert metrics.frames_processed == len(bgra) + len(gray)


def test_a_backend_raising_an_untranslated_error_loses_only_that_frame():
    calls = {"n": 0}

    def crashing(tensor):
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise RuntimeError("segfault-adjacent driver error")
        return colour_scores(tensor)

    classifier = fake_classifier(["red", "green", "blue"], crashing)
    events, metrics, _ = run_pipeline(ListSource(tray_frames(["green", "blue"])), classifier, WHOLE_FRAME)
    assert labels_of(events) == ["green", "blue"]
    assert metrics.inference_errors == 2


def test_a_tray_region_that_stops_fitting_skips_frames_instead_of_stopping():
    small = tray_frames(["red"])
    tiny = [cv2.resize(frame, (30, 20)) for frame in tray_frames(["blue"])]  # the tray region is now outside
    options = PipelineOptions(checkout=CheckoutOptions(roi=(40, 20, 80, 80)), metrics_interval=0)
    events, metrics, _ = run_pipeline(ListSource(small + tiny), colour_classifier(), options)
    assert labels_of(events) == ["red"]
    assert metrics.frame_errors == len(tiny) and metrics.frames_read == len(small) + len(tiny)


def test_a_hanging_sink_delays_only_itself_and_drops_are_counted_for_it_alone(caplog):
    release = threading.Event()

    def stuck(event):
        release.wait(30)

    basket = Basket()
    options = PipelineOptions(checkout=CheckoutOptions(roi=None), metrics_interval=0, sink_capacity=1)
    frames = tray_frames(["red", "green", "blue", "red"])
    with caplog.at_level(logging.ERROR, logger="tillsight.pipelines.sinks"):
        pipeline = CheckoutPipeline(ListSource(frames), colour_classifier(), [stuck, basket], options)
        pipeline.start()
        pipeline._worker.join(20)  # the frames all go through while the sink hangs
        deadline = time.monotonic() + 5
        while sum(basket.items().values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    metrics = pipeline.metrics()
    assert metrics.frames_processed == metrics.frames_read and metrics.events == 4
    assert basket.items() == {"red": 2, "green": 1, "blue": 1}  # the other sink got every event at once
    per_sink = {stats.name: stats for stats in metrics.sinks}
    assert per_sink["stuck"].dropped == 2 and per_sink["basket"].dropped == 0  # one in the sink, one queued
    assert metrics.events_dropped == 2 and "sink stuck dropped 2" in metrics.summary()
    assert [r.getMessage() for r in caplog.records] == ["sink stuck is 1 events behind; dropping events for it (1 so far)"]
    release.set()
    assert pipeline.join(timeout=10)
    assert 0 < metrics.frames_classified < 130  # the empty tray needs no model
    assert pipeline.metrics().sinks[0].delivered == 2


def test_the_audit_log_never_drops_an_event_it_slows_the_pipeline_instead():
    class SlowDisk(io.StringIO):
        def write(self, text):
            time.sleep(0.2)
            return super().write(text)

    stream = SlowDisk()
    options = PipelineOptions(checkout=CheckoutOptions(roi=None), metrics_interval=0, sink_capacity=1)
    frames = tray_frames(["red", "green", "blue", "red", "green"])
    _, metrics, _ = run_pipeline(ListSource(frames), colour_classifier(), options, sinks=[JsonLines(stream)])
    assert [json.loads(line)["label"] for line in stream.getvalue().splitlines()] == ["red", "green", "blue", "red", "green"]
    assert metrics.events_dropped == 0 and metrics.sinks[1].never_drops and not metrics.sinks[0].never_drops
