"""``tillsight run`` on a video file and a camera index, and ``tillsight demo``."""

from __future__ import annotations

import json
import time

import cv2
import pytest

from tillsight import cli
from tillsight.demo import ASSETS, demo_script, run_demo

SCRIPT = demo_script()
ROI = ",".join(str(v) for v in SCRIPT.roi)
EXPECTED = [p.label for p in SCRIPT.placements]


def test_run_on_a_video_file_writes_the_events_as_json_lines(tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    code = cli.main(
        ["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--roi", ROI, "--jsonl", str(out)]
    )
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["product_recognized"] * len(EXPECTED)
    assert [line["label"] for line in lines] == EXPECTED
    captured = capsys.readouterr()
    assert "Banana" in captured.out  # human-readable lines on stdout when events go to a file
    assert f"basket: {EXPECTED.count('Banana')} x Banana" in captured.err and "fps" in captured.err


def test_run_prints_json_lines_on_stdout_by_default(capsys):
    assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--roi", ROI]) == 0
    labels = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert labels == EXPECTED


def test_run_on_a_camera_index(monkeypatch, capsys):
    """The camera path end to end; OpenCV's capture of index 0 is pointed at the demo video (no camera here)."""
    real_capture = cv2.VideoCapture
    opened, settings = [], {}

    class FakeCamera:
        def __init__(self, target, *args):
            assert target == 0  # the index reached OpenCV as an int, as for a real camera
            opened.append(target)
            self._capture = real_capture(str(ASSETS / "checkout.mp4"))
            self._last, self._reads = None, 0

        def read(self):
            time.sleep(0.004)  # a 250 fps camera: frames arrive over time, not all at once
            ok, frame = self._capture.read()
            self._reads += 1
            if ok:
                self._last = frame
                return ok, frame
            # After the video the camera keeps looking at the empty tray, with sensor noise so it
            # is not a frozen stream (a busy machine drops frames and reaches the end early).
            still = self._last.copy()
            still[0, 0] = self._reads % 256
            return True, still

        def set(self, prop, value):
            settings[prop] = value
            return True

        def __getattr__(self, name):
            return getattr(self._capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    code = cli.main(["run", str(ASSETS / "classifier"), "--source", "0", "--roi", ROI, "--max-frames", "300"])
    assert code == 0 and opened == [0]
    assert settings.get(cv2.CAP_PROP_BUFFERSIZE) == 1
    labels = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert len(labels) >= 4 and labels == EXPECTED[: len(labels)]


def test_run_with_a_missing_source_or_bad_options_fails_in_one_line(tmp_path, capsys):
    assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(tmp_path / "nope.mp4")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: source") and len(err.splitlines()) == 1
    assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--min-votes", "2"]) == 1
    assert "majority" in capsys.readouterr().err
    assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--roi", "900,900,10,10"]) == 1
    assert "outside the 480x360 frame" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", str(ASSETS / "classifier"), "--source", "0", "--roi", "1,2,3"])
    assert exit_info.value.code == 2


def test_demo_prints_the_events_and_the_right_basket(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    basket = ", ".join(f"{count} x {label}" for label, count in SCRIPT.expected_basket.items())
    assert f"basket: {basket}\n" in out and len(SCRIPT.expected_basket) >= 10
    assert "matches the video's script" in out


def test_demo_with_another_bundle_says_so_and_that_it_checks_no_basket(tmp_path, capsys):
    import shutil

    bundle = shutil.copytree(ASSETS / "classifier", tmp_path / "mine")
    assert cli.main(["demo", "--bundle", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert f"recognized by the bundle {bundle}:" in out and "int8 demo classifier" not in out
    assert "no basket check" in out and "the classifier was replaced" in out and "matches" not in out


def test_run_demo_returns_the_basket_and_metrics():
    result = run_demo()
    assert result.basket == SCRIPT.expected_basket and result.matches
    assert [e.label for e in result.events] == EXPECTED
    assert result.metrics.frames_processed == SCRIPT.frames


def test_every_checkout_threshold_is_a_flag_and_reaches_the_pipeline(capsys):
    import dataclasses

    from tillsight.pipelines import CheckoutOptions

    assert set(cli.CHECKOUT_FLAGS) | {"roi", "background_label"} == {f.name for f in dataclasses.fields(CheckoutOptions)}
    # No frame of the demo reaches a 0.999 score: no vote can win, every item goes to staff review.
    args = [
        "run",
        str(ASSETS / "classifier"),
        "--source",
        str(ASSETS / "checkout.mp4"),
        "--roi",
        ROI,
        "--min-score",
        "0.999",
        "--unknown-after",
        "2",
    ]
    assert cli.main(args) == 0
    kinds = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["unknown_product"] * len(EXPECTED)


def test_run_on_a_folder_of_product_photos_classifies_each_photo_whatever_its_size(tmp_path, capsys, caplog):
    from tillsight import load

    from ..conftest import DATA

    folder = tmp_path / "photos"
    folder.mkdir()
    photos = sorted(DATA.glob("val/**/*.jpg"))[::4][:12]
    for k, path in enumerate(photos):  # every third photo squashed: photos of a folder differ in size
        image = cv2.imread(str(path))
        if k % 3 == 0:
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 3))
        cv2.imwrite(str(folder / f"{k:02d}.jpg"), image)
    assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(folder)]) == 0  # read as camera frames
    assert "add --photos" in capsys.readouterr().err and "broadcast" not in caplog.text
    caplog.clear()
    caplog.set_level("WARNING")
    assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(folder), "--photos"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert len(events) == len(photos)  # one decision per photo, none waits for an empty tray
    with load(ASSETS / "classifier") as classifier:
        expected = [classifier.classify(cv2.imread(str(path)), top_k=1)[0] for path in sorted(folder.iterdir())]
    for event, top in zip(events, expected, strict=True):
        if event["event"] == "product_recognized":
            assert event["label"] == top.label and top.score >= 0.5
        else:
            assert event["candidates"][0]["label"] == top.label and top.score < 0.5
    assert f"{len(photos)} frames ({len(photos)} classified, 0 dropped, 0 failed)" in captured.err
    assert "broadcast" not in caplog.text and "changed resolution" not in caplog.text


def test_a_setup_error_is_said_once_and_opencv_warnings_stay_quiet(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tillsight",
            "run",
            str(ASSETS / "classifier"),
            "--source",
            str(ASSETS / "checkout.mp4"),
            "--roi",
            "900,900,10,10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.count("lies outside the 480x360 frame") == 1 and "ERROR" not in done.stderr
    import cv2

    level = cv2.utils.logging.getLogLevel()
    try:
        assert cli.main(["profiles"]) == 0  # any command: OpenCV's own [ WARN ] lines are off
        assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT
    finally:
        cv2.utils.logging.setLogLevel(level)


@pytest.mark.parametrize("case", ["missing camera", "truncated video"])
def test_a_source_that_does_not_open_is_said_once_without_the_libraries_noise(case, tmp_path):
    """A missing camera index printed its hint 3 times among OpenCV [ERROR] lines; FFmpeg's 'moov atom not found' leaked."""
    import subprocess
    import sys

    source = "7"
    if case == "truncated video":
        source = str(tmp_path / "cut.mp4")
        (tmp_path / "cut.mp4").write_bytes((ASSETS / "checkout.mp4").read_bytes()[:2000])
    done = subprocess.run(
        [sys.executable, "-m", "tillsight", "run", str(ASSETS / "classifier"), "--source", source],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot open"), lines
    hint = "check the cable" if case == "missing camera" else "re-encoding it"
    assert done.stderr.count(hint) == 1, lines
    assert not [line for line in lines if line.startswith("[") or "moov atom" in line], lines  # OpenCV's and FFmpeg's own


def test_an_audit_log_on_a_full_disk_ends_the_run_in_one_line_with_the_basket_and_metrics(capsys):
    """It said 'sink jsonl failed' per event, went on, then died with 'unexpected OSError' and no basket."""
    args = ["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--roi", ROI, "--jsonl", "/dev/full"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "basket:" in err and "pipeline:" in err  # what the other sinks took is still reported
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "the audit log /dev/full cannot be written (No space left on device)" in errors[0]
    assert int(errors[0].split("): ")[1].split(" event")[0]) >= 1  # how many were not written
    assert "unexpected" not in err and err.count("cannot write") <= 1  # said once, not per event


def test_an_audit_log_in_a_missing_folder_is_created_and_a_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "logs" / "today" / "events.jsonl"
    assert (
        cli.main(["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--roi", ROI, "--jsonl", str(out)])
        == 0
    )
    assert len(out.read_text().splitlines()) == len(EXPECTED)
    capsys.readouterr()
    assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--jsonl", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--jsonl {tmp_path} is a folder" in err[0]


def test_a_stream_that_changes_size_is_said_once_and_the_tray_is_learned_again(tmp_path, capsys, caplog):
    """It wrote one warning per frame (119 lines) and classified nothing; a clipped tray region went unsaid."""
    import logging

    video = cv2.VideoCapture(str(ASSETS / "checkout.mp4"))
    for index in range(200):
        ok, frame = video.read()
        assert ok
        if index >= 100:  # the camera drops to half resolution
            frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2))
        cv2.imwrite(str(tmp_path / f"frame{index:04d}.png"), frame)
    with caplog.at_level(logging.INFO, logger="tillsight.pipelines"):
        assert cli.main(["run", str(ASSETS / "classifier"), "--source", str(tmp_path), "--fps", "10", "--roi", ROI]) == 0
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "tillsight.pipelines.pipeline"]
    x, y, w, h = SCRIPT.roi
    assert len(said) == 2, said
    assert "the frames are now 240x180 (were 480x360, from frame 100 on); learning the empty tray again" in said[0]
    assert f"the tray region {ROI} reaches past the 240x180 frame: only {240 - x}x{180 - y} of it is used" in said[1]
    assert sum("learned the empty tray" in r.getMessage() for r in caplog.records) == 2
    assert "0 failed" in capsys.readouterr().err
