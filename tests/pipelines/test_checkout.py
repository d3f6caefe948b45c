"""Checkout decision logic: voting, one event per presence, unknown items, the tray monitor."""

from __future__ import annotations

import numpy as np
import pytest

from tillsight import Prediction
from tillsight.pipelines import CheckoutLogic, CheckoutOptions, ProductRecognized, TrayMonitor, UnknownProduct

FPS = 10


def feed(logic: CheckoutLogic, observations) -> list:
    """Run (occupied, label, score) observations at 10 fps; returns (frame index, event) pairs."""
    events = []
    for index, (occupied, label, score) in enumerate(observations):
        prediction = Prediction(label, 0, score) if label is not None else None
        events += [(index, event) for event in logic.update(index / FPS, occupied, prediction)]
    return events


def empty(n):
    return [(False, None, 0.0)] * n


def item(label, n, score=0.9):
    return [(True, label, score)] * n


def test_one_event_per_presence_at_the_deciding_frame():
    logic = CheckoutLogic(CheckoutOptions(window=8, min_votes=5, enter_frames=2, leave_frames=3))
    events = feed(logic, empty(5) + item("Banana", 30) + empty(5) + item("Kiwi", 10) + empty(3))
    assert [(i, type(e), e.label) for i, e in events] == [
        # presence opens at the 2nd occupied frame (index 6); its 5th vote is frame 10
        (10, ProductRecognized, "Banana"),
        (45, ProductRecognized, "Kiwi"),
    ]
    banana = events[0][1]
    assert banana.first_seen == pytest.approx(0.6) and banana.last_seen == pytest.approx(1.0)
    assert banana.frames == 5 and banana.score == pytest.approx(0.9)


def test_no_majority_no_event_and_low_scores_do_not_vote():
    options = CheckoutOptions(window=8, min_votes=5, unknown_after=100.0)
    mixed = [(True, "Banana" if k % 2 else "Kiwi", 0.9) for k in range(40)]  # 4 of 8 at best
    assert feed(CheckoutLogic(options), empty(3) + mixed) == []
    assert feed(CheckoutLogic(options), empty(3) + item("Banana", 40, score=0.3)) == []
    # the same label with enough score wins even among noise
    noisy = [(True, "Banana" if k % 4 else "Kiwi", 0.9) for k in range(12)]
    assert [e.label for _, e in feed(CheckoutLogic(options), empty(3) + noisy)] == ["Banana"]


def test_unknown_after_the_waiting_time_and_never_a_guess_afterwards():
    options = CheckoutOptions(unknown_after=2.0)
    mixed = [(True, ("Banana", "Kiwi", "Lemon")[k % 3], 0.9) for k in range(40)]
    events = feed(CheckoutLogic(options), empty(3) + mixed + item("Banana", 20))
    assert len(events) == 1
    index, event = events[0]
    assert isinstance(event, UnknownProduct)
    assert event.last_seen - event.first_seen == pytest.approx(2.0)
    assert {label for label, _ in event.candidates} == {"Banana", "Kiwi", "Lemon"}
    assert event.to_dict()["event"] == "unknown_product"


def test_brief_gaps_do_not_split_a_presence_but_leaving_does():
    logic = CheckoutLogic(CheckoutOptions(leave_frames=3))
    flicker = item("Banana", 10) + empty(2) + item("Banana", 10)  # 2 empty frames: still the same item
    assert [e.label for _, e in feed(logic, empty(3) + flicker)] == ["Banana"]
    logic = CheckoutLogic(CheckoutOptions(leave_frames=3))
    assert [e.label for _, e in feed(logic, empty(3) + item("Banana", 10) + empty(3) + item("Banana", 10))] == [
        "Banana",
        "Banana",
    ]


def test_background_label_marks_the_empty_tray():
    logic = CheckoutLogic(CheckoutOptions(background_label="empty"))
    assert logic.is_empty_prediction(Prediction("empty", 0, 0.9))
    assert not logic.is_empty_prediction(Prediction("empty", 0, 0.2))  # not sure: not empty
    assert not logic.is_empty_prediction(Prediction("Banana", 1, 0.9))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_votes": 4, "window": 8}, "majority"),
        ({"min_votes": 9, "window": 8}, "min_votes <= window"),
        ({"min_score": 1.5}, "min_score"),
        ({"roi": (0, 0, 0, 10)}, "roi"),
        ({"unknown_after": 0}, "unknown_after"),
    ],
)
def test_bad_options_are_refused_with_the_field_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CheckoutOptions(**kwargs)


def test_tray_monitor_on_real_photos(photos):
    import cv2

    tray = cv2.resize(cv2.imread(str(photos.eval_items[0][0])), (240, 240))  # a real, busy background
    product = cv2.resize(cv2.imread(str(photos.eval_items[-1][0])), (90, 90))
    monitor = TrayMonitor(CheckoutOptions(background_frames=3))
    rng = np.random.default_rng(0)

    def noisy(image):
        return np.clip(image + rng.normal(0, 2.5, image.shape), 0, 255).astype(np.uint8)

    assert [monitor.update(noisy(tray)) for _ in range(3)] == [None, None, None]
    assert monitor.ready
    assert monitor.update(noisy(tray)) is False
    brighter = np.clip(tray.astype(np.int16) + 25, 0, 255).astype(np.uint8)  # exposure change
    assert monitor.update(noisy(brighter)) is False
    with_item = tray.copy()
    with_item[100:190, 60:150] = product  # an item on 14% of the tray
    assert monitor.update(noisy(with_item)) is True
    assert monitor.changed_fraction > 0.05


def test_tray_monitor_restarts_learning_when_the_tray_is_busy(photos):
    import cv2

    tray = cv2.resize(cv2.imread(str(photos.eval_items[0][0])), (240, 240))
    other = cv2.resize(cv2.imread(str(photos.eval_items[-1][0])), (240, 240))
    monitor = TrayMonitor(CheckoutOptions(background_frames=3))
    for image in (other, other, tray, tray, tray):  # a hand leaves after two frames
        monitor.update(image)
    assert monitor.ready
    assert monitor.update(tray) is False and monitor.update(other) is True


def test_tray_monitor_restarts_learning_when_the_camera_changes_aspect(photos):
    import cv2

    photo = cv2.imread(str(photos.eval_items[0][0]))
    wide, square = cv2.resize(photo, (320, 180)), cv2.resize(photo, (240, 240))
    monitor = TrayMonitor(CheckoutOptions(background_frames=3))
    for image in (wide, wide, square, square, square):  # no broadcast error: learning starts again
        monitor.update(image)
    assert monitor.ready and monitor.update(square) is False
