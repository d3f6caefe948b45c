"""The whole pipeline on videos with a known product sequence: exactly those events come out."""

from __future__ import annotations

import json
import logging
import threading
import time

import cv2
import pytest

from tillsight import load
from tillsight.demo import ASSETS, demo_script
from tillsight.errors import InferenceError
from tillsight.pipelines import (
    Basket,
    CheckoutOptions,
    CheckoutPipeline,
    ImageFolderSource,
    PipelineOptions,
    ProductRecognized,
    UnknownProduct,
    VideoFileSource,
)
from tillsight.testing import fake_classifier

from .helpers import ScriptedSource, colour_classifier, colour_scores, options_for, run_pipeline, tray_video, write_video


def test_a_synthetic_video_gives_exactly_its_product_sequence(tmp_path):
    sequence = ["red", "blue", "red", "green"]
    video = tray_video(tmp_path, sequence)
    events, metrics, _ = run_pipeline(VideoFileSource(video), colour_classifier(), options_for())
    assert [type(e) for e in events] == [ProductRecognized] * 4
    assert [e.label for e in events] == sequence
    for k, event in enumerate(events):  # each decided while its item was on the tray
        arrive = 1.0 + 3.0 * k
        assert arrive <= event.first_seen < event.last_seen < arrive + 2.0
    assert metrics.frames_processed == metrics.frames_read == 130
    assert 0 < metrics.frames_classified < 130  # the empty tray needs no model
    assert metrics.events == 4 and metrics.source_state == "ended"


def test_an_item_without_a_majority_is_reported_unknown_not_guessed(tmp_path):
    video = tray_video(tmp_path, ["yellow", "green"], item_s=3.0)
    events, _, _ = run_pipeline(VideoFileSource(video), colour_classifier(), options_for(unknown_after=2.0))
    assert [type(e) for e in events] == [UnknownProduct, ProductRecognized]
    assert events[1].label == "green"
    assert events[0].last_seen - events[0].first_seen == pytest.approx(2.0, abs=0.11)


def test_a_raising_sink_is_logged_and_the_others_still_get_every_event(tmp_path, caplog):
    video = tray_video(tmp_path, ["red", "green"])

    def broken(event):
        raise RuntimeError("the POS is down")

    basket = Basket()
    # The sink logger's own level: what earlier tests did to logging levels must not hide the line.
    with caplog.at_level(logging.WARNING, logger="tillsight.pipelines.sinks"):
        events, metrics, _ = run_pipeline(VideoFileSource(video), colour_classifier(), options_for(), sinks=[broken, basket])
    assert [e.label for e in events] == ["red", "green"]
    assert basket.items() == {"red": 1, "green": 1}
    assert metrics.sink_errors == 2
    failures = [r.getMessage() for r in caplog.records if r.name == "tillsight.pipelines.sinks"]
    assert failures == ["sink broken failed on product_recognized: the POS is down"] * 2


def test_a_blocking_sink_does_not_hold_up_the_frames(tmp_path):
    video = tray_video(tmp_path, ["red", "green", "blue"])
    release = threading.Event()
    received = []

    def slow(event):
        release.wait(10)
        received.append(event.label)

    pipeline = CheckoutPipeline(VideoFileSource(video), colour_classifier(), [slow], options_for())
    pipeline.start()
    deadline = time.monotonic() + 20
    while pipeline.metrics().frames_processed < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pipeline.metrics().frames_processed == 100  # all frames went through while the sink hung
    release.set()
    assert pipeline.join(timeout=10)
    assert received == ["red", "green", "blue"]


def test_a_frame_the_model_fails_on_is_skipped_and_counted(tmp_path):
    video = tray_video(tmp_path, ["red", "blue"])
    calls = {"n": 0}

    def flaky(tensor):
        calls["n"] += 1
        if calls["n"] == 3:
            raise InferenceError("the delegate hiccuped")
        return colour_scores(tensor)

    classifier = fake_classifier(["red", "green", "blue"], flaky)
    events, metrics, _ = run_pipeline(VideoFileSource(video), classifier, options_for())
    assert [e.label for e in events] == ["red", "blue"]
    assert metrics.inference_errors == 1 and metrics.frames_processed == metrics.frames_read


def test_metrics_report_rate_stage_latency_and_frame_age(tmp_path):
    model_s = 0.03  # a model that takes at least 30 ms: a floor the measurements must show, however busy the machine

    def slow_model(tensor):
        time.sleep(model_s)
        return colour_scores(tensor)

    classifier = fake_classifier(["red", "green", "blue"], slow_model)
    video = tray_video(tmp_path, ["red"])  # 1 s empty, 2 s red, 1 s empty at 10 fps
    started = time.monotonic()
    events, metrics, _ = run_pipeline(VideoFileSource(video), classifier, options_for())
    wall_s = time.monotonic() - started
    assert [e.label for e in events] == ["red"]
    assert metrics.frames_read == metrics.frames_processed == 40
    assert metrics.frames_classified == classifier.backend.calls and 15 <= metrics.frames_classified <= 25  # only while occupied
    stages = metrics.stage_latency
    assert set(stages) == {"tray", "preprocess", "inference", "decision"}
    assert stages["inference"].p50_ms >= 1000 * model_s
    assert all(0 <= stages[name].p50_ms <= stages[name].p95_ms for name in stages)
    # Frame age runs from capture to decision, so a classified frame is at least one model call old.
    assert metrics.frame_age.p99_ms >= 1000 * model_s
    # fps: processed frames over the span between the first and the last; that span holds the
    # model calls of the classified frames but the first and last, and fits in the run.
    spent_in_model_s = (metrics.frames_classified - 2) * model_s
    assert (metrics.frames_processed - 1) / wall_s <= metrics.fps <= (metrics.frames_processed - 1) / spent_in_model_s
    assert metrics.elapsed_s <= wall_s + 0.5
    assert f"{metrics.fps:.1f} fps, 40 frames ({metrics.frames_classified} classified" in metrics.summary()
    assert json.loads(json.dumps(metrics.to_dict()))["frames_processed"] == 40


def test_stop_on_a_live_source_leaves_no_thread_behind():
    before = set(threading.enumerate())
    pipeline = CheckoutPipeline(ScriptedSource(fps=200), colour_classifier(), [], PipelineOptions(metrics_interval=0))
    with pipeline:
        deadline = time.monotonic() + 30  # a bound for a slow, busy machine; normally a fraction of a second
        while pipeline.metrics().frames_processed <= 10 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert pipeline.metrics().frames_processed > 10
    assert set(threading.enumerate()) <= before  # stop() joined every thread it started


def test_max_frames_stops_a_live_source():
    options = PipelineOptions(metrics_interval=0, max_frames=25)
    _, metrics, _ = run_pipeline(ScriptedSource(fps=200), colour_classifier(), options)
    assert metrics.frames_processed == 25


def test_background_label_must_be_a_model_label():
    with pytest.raises(ValueError, match="not a label of the model"):
        CheckoutPipeline(
            ScriptedSource(), colour_classifier(), [], PipelineOptions(checkout=CheckoutOptions(background_label="empty"))
        )


def test_an_image_folder_source_through_the_pipeline(tmp_path):
    video = tray_video(tmp_path, ["blue", "green"])
    capture = cv2.VideoCapture(str(video))
    folder = tmp_path / "frames"
    folder.mkdir()
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        cv2.imwrite(str(folder / f"{index:05d}.png"), image)
        index += 1
    events, _, _ = run_pipeline(ImageFolderSource(folder, fps=10), colour_classifier(), options_for())
    assert [e.label for e in events] == ["blue", "green"]


# -- real photos, real int8 model: the shipped demo classifier ---------------------------


@pytest.fixture(scope="module")
def script():
    return demo_script()


def test_the_demo_video_gives_its_scripted_sequence_at_the_right_times(script):
    with load(ASSETS / "classifier") as classifier:
        events, metrics, _ = run_pipeline(VideoFileSource(ASSETS / script.video), classifier, options_for(script.roi))
    assert [e.label for e in events] == [p.label for p in script.placements]
    for event, placement in zip(events, script.placements, strict=True):
        assert placement.arrive_s <= event.first_seen < event.last_seen <= placement.gone_s
    assert metrics.frames_processed == script.frames


def test_real_photo_items_in_another_order_give_that_order(tmp_path, script):
    """The demo video's item segments re-cut into a new order: the events follow the new order."""
    capture = cv2.VideoCapture(str(ASSETS / script.video))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    fps = script.fps
    segments = [frames[round(p.arrive_s * fps) : round(p.gone_s * fps) + 10] for p in script.placements]
    order = [4, 2, 5, 0]
    recut = frames[:20] + [frame for k in order for frame in segments[k]]
    video = write_video(tmp_path / "recut.avi", recut, fps)
    with load(ASSETS / "classifier") as classifier:
        events, _, _ = run_pipeline(VideoFileSource(video), classifier, options_for(script.roi))
    assert [e.label for e in events] == [script.placements[k].label for k in order]
