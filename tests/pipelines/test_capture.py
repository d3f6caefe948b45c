"""Sources and the capture thread: latest-frame policy, reconnects, frozen streams, states."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from tillsight.errors import SourceError
from tillsight.pipelines import (
    CameraSource,
    Capture,
    CaptureOptions,
    ImageFolderSource,
    SourceState,
    StreamSource,
    VideoFileSource,
    open_source,
)

from .helpers import ScriptedSource, number_of, numbered, write_video

FAST = CaptureOptions(reconnect_min_s=0.01, reconnect_max_s=0.05, open_timeout=0.5)


def drain(capture: Capture, timeout: float = 10.0) -> list:
    frames, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = capture.get(timeout=0.1)
        if frame is None:
            if capture.finished:
                return frames
            continue
        frames.append(frame)
    raise AssertionError("the capture did not finish")


def test_open_source_picks_the_source_from_what_the_user_typed(tmp_path):
    video = write_video(tmp_path / "v.avi", [numbered(i) for i in range(3)])
    assert isinstance(open_source(0), CameraSource) and isinstance(open_source("1"), CameraSource)
    stream = open_source("rtsp://kiosk:secret@10.0.0.5/stream")
    assert isinstance(stream, StreamSource) and "secret" not in stream.source_id
    assert isinstance(open_source(tmp_path), ImageFolderSource)
    assert isinstance(open_source(str(video)), VideoFileSource)
    with pytest.raises(SourceError, match="not a camera index, a stream URL, a folder or an existing video file"):
        open_source(tmp_path / "missing.mp4")


def test_a_video_file_is_read_whole_in_order_with_media_timestamps(tmp_path):
    video = write_video(tmp_path / "v.avi", [numbered(i * 7) for i in range(25)], fps=5)
    capture = Capture(VideoFileSource(video))
    capture.start()
    frames = []
    while (frame := capture.get(timeout=5)) is not None:
        time.sleep(0.005)  # a consumer slower than the reader loses nothing on a file
        frames.append(frame)
    assert [f.frame_id for f in frames] == list(range(25))
    assert [f.timestamp for f in frames] == pytest.approx([i / 5 for i in range(25)])
    assert capture.state is SourceState.ENDED and capture.stats().frames_dropped == 0


def test_an_image_folder_in_name_order_skipping_unreadable_files(tmp_path):
    for index in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"frame_{index}.png"), numbered(index))
    (tmp_path / "frame_1b.jpg").write_bytes(b"not an image")
    frames = drain(_started(Capture(ImageFolderSource(tmp_path, fps=4))))
    assert [number_of(f.image) for f in frames] == [0, 1, 2]
    assert [f.timestamp for f in frames] == [0.0, 0.25, 0.5]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="has no images"):
        ImageFolderSource(tmp_path / "empty").open()


def _started(capture: Capture) -> Capture:
    capture.start()
    return capture


def test_a_slow_consumer_of_a_live_source_always_gets_a_fresh_frame():
    source = ScriptedSource(fps=400)
    capture = _started(Capture(source, FAST))
    lags = []
    try:
        for _ in range(8):
            read_before = capture.stats().frames_read
            frame = capture.get(timeout=2)
            lags.append(read_before - 1 - number_of(frame.image))
            time.sleep(0.05)  # inference slower than the camera
    finally:
        capture.stop()
    # The newest frame, not one queued long ago: at most the one frame between read and hand-off
    # is newer than what we got, however slowly this machine schedules the threads.
    assert max(lags) <= 1, lags
    stats = capture.stats()
    assert stats.frames_dropped > 0
    assert 0 <= stats.frames_read - 8 - stats.frames_dropped <= 2  # every other frame was dropped, none queued
    assert not capture.alive


def test_without_dropping_a_slow_consumer_falls_behind():
    # The contrast that shows why live sources drop: the same camera with a queue.
    source = ScriptedSource(fps=400)
    capture = _started(Capture(source, CaptureOptions(drop_frames=False, queue_size=4)))
    try:
        ids = []
        for _ in range(8):
            ids.append(number_of(capture.get(timeout=2).image))
            time.sleep(0.05)
    finally:
        capture.stop()
    assert ids == list(range(8))  # every frame, in order, however old


def test_a_live_source_that_dies_is_reopened():
    source = ScriptedSource(per_open=(5, None))  # the cable comes loose after 5 frames
    capture = _started(Capture(source, FAST))
    try:
        ids = [number_of(capture.get(timeout=2).image) for _ in range(15)]
    finally:
        capture.stop()
    stats = capture.stats()
    assert stats.reconnects == 1 and stats.read_failures == 1 and source.opens == 2
    assert max(ids) > 5  # frames kept coming after the reconnect
    assert capture.state is SourceState.ENDED  # stopped by us


def test_a_real_stream_reconnects_when_it_ends(tmp_path):
    # OpenCV's own FFmpeg capture, treated as live: the end of the file is a lost stream.
    video = write_video(tmp_path / "v.avi", [np.full((48, 64, 3), 20 + 30 * i, np.uint8) for i in range(6)])
    capture = _started(Capture(StreamSource(str(video), timeout=2), CaptureOptions(drop_frames=False, reconnect_min_s=0.01)))
    try:
        ids = [round((capture.get(timeout=5).image.mean() - 20) / 30) for _ in range(14)]  # survives compression
    finally:
        capture.stop()
    assert ids[:6] == list(range(6)) and ids[6:12] == list(range(6))  # the stream came back from the start
    assert capture.stats().reconnects >= 2


def test_a_source_that_does_not_come_back_fails_with_a_clear_error():
    source = ScriptedSource(per_open=(3,), opens_allowed=1)
    capture = _started(Capture(source, CaptureOptions(reconnect_min_s=0.01, max_reconnects=2)))
    frames = drain(capture)
    stats = capture.stats()
    # A live source: a consumer slower than the camera gets the newest frame, so some may be dropped.
    assert stats.frames_read == 3 and len(frames) + stats.frames_dropped == 3 and frames[-1].frame_id == 2
    assert stats.read_failures == 1 and source.opens == 1  # the two reopenings failed
    assert capture.state is SourceState.FAILED
    assert "not back after 2 tries" in str(capture.error)


def test_a_frozen_stream_is_detected_and_reopened():
    source = ScriptedSource(frozen_opens={0})  # the first connection repeats one picture forever
    capture = _started(Capture(source, CaptureOptions(freeze_timeout=0.2, reconnect_min_s=0.01)))
    try:
        deadline = time.monotonic() + 5
        while capture.stats().freezes == 0 and time.monotonic() < deadline:
            capture.get(timeout=0.1)
        frames = [capture.get(timeout=2) for _ in range(5)]
    finally:
        capture.stop()
    assert capture.stats().freezes == 1 and source.opens == 2
    assert len({number_of(f.image) for f in frames}) == 5  # fresh, moving frames again


def test_a_missing_camera_fails_after_the_open_timeout_naming_the_fix(caplog):
    caplog.set_level("INFO", logger="tillsight.pipelines")
    capture = _started(Capture(CameraSource(57), CaptureOptions(open_timeout=0.3, reconnect_min_s=0.05)))
    assert drain(capture) == []
    assert capture.state is SourceState.FAILED
    assert "cannot open camera 57" in str(capture.error) and "cable" in str(capture.error)
    # the error is the caller's to report (run() raises it): the log says the state, not the message again
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert any(r.getMessage() == "source 57: failed" and r.levelname == "WARNING" for r in caplog.records)


@pytest.mark.parametrize(
    "convert", [lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA)]
)
def test_grayscale_and_bgra_frames_become_bgr(convert):
    source = ScriptedSource(per_open=(4,), live=False, convert=convert)
    capture = _started(Capture(source))
    frames = drain(capture)
    assert len(frames) == 4 and all(f.image.shape == (48, 64, 3) for f in frames)
    assert capture.stats().frames_converted == 4


def test_stop_ends_the_thread_and_closes_the_source():
    source = ScriptedSource()
    capture = _started(Capture(source))
    capture.get(timeout=2)
    capture.stop()
    assert not capture.alive and source.closes >= 1
    assert not [t for t in threading.enumerate() if t.name.startswith("tillsight-capture")]


def test_frames_are_frozen_dataclasses():
    frame = _started(Capture(ScriptedSource(per_open=(1,), live=False))).get(timeout=2)
    with pytest.raises(AttributeError):
        frame.frame_id = 3  # type: ignore[misc]
    assert isinstance(frame.image, np.ndarray) and frame.source_id == "scripted"
