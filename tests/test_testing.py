"""The fake backend that ships for kiosk apps' own tests."""

from __future__ import annotations

import numpy as np

from tillsight.testing import fake_classifier


def test_fake_classifier_runs_the_real_task_logic():
    def respond(tensor: np.ndarray) -> np.ndarray:
        red = tensor[0, ..., 0].mean() / 255.0  # RGB input: channel 0 is red
        return np.array([[red, 1.0 - red, 0.0]])

    classifier = fake_classifier(["apple", "lime", "none"], respond, size=(16, 16))
    red_frame = np.zeros((40, 60, 3), np.uint8)
    red_frame[..., 2] = 255  # BGR
    predictions = classifier.classify(red_frame, top_k=2)
    assert [(p.label, p.index, round(p.score, 3)) for p in predictions] == [("apple", 0, 1.0), ("lime", 1, 0.0)]
    assert classifier.backend.calls == 1
    classifier.close()
    assert classifier.backend.closed
