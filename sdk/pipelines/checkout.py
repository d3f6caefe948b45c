"""Checkout decisions: is the tray empty, which product is on it, when to say so.

Two parts, both plain objects driven frame by frame (no threads, no clocks of their own):

* :class:`TrayMonitor` tells an occupied tray from an empty one by comparing the tray
  region with a reference picture of the empty tray, learned from the first frames (or
  given). Global exposure changes are cancelled out, and the reference follows slow
  lighting drift while the tray is empty.
* :class:`CheckoutLogic` turns per-frame classifications into events: a product is
  recognized when one label wins at least ``min_votes`` of the last ``window`` frames
  with a score of at least ``min_score``, once per item presence; an item on the tray
  for ``unknown_after`` seconds with no such majority becomes an ``UnknownProduct``.
  Instead of the tray monitor, a model with an "empty tray" class can say when the tray
  is empty (``background_label``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import cv2
import numpy as np

from ..classifier import Prediction
from ..errors import OptionsError
from .events import Event, ProductRecognized, UnknownProduct

__all__ = ["CheckoutOptions", "TrayMonitor", "CheckoutLogic"]

logger = logging.getLogger(__name__)

_MONITOR_WIDTH = 64  # the tray is compared at this width or a little less: enough for an item, cheap on a Pi


@dataclasses.dataclass(frozen=True)
class CheckoutOptions:
    """Thresholds of the checkout decision logic.

    Attributes:
        roi: Tray region ``(x, y, width, height)`` in frame pixels; None uses the whole frame.
        min_score: A frame votes for its top label only when the score reaches this.
        window: How many recent frames the vote looks at (M).
        min_votes: Votes the winning label needs in the window (N).
        unknown_after: Seconds an item may stay on the tray without a majority before it
            is reported as unknown.
        background_label: A model class meaning "empty tray". When set, the model decides
            occupancy and the frame difference is not used.
        background_frames: Frames averaged into the empty-tray reference at start (the tray
            must be empty then) unless a reference image is given.
        change_threshold: Difference in pixel intensity (0-255) that counts as a change.
        occupied_fraction: Share of the tray that must change for it to count as occupied.
        enter_frames: Consecutive occupied frames that start an item presence.
        leave_frames: Consecutive empty frames that end it.
        background_adapt: How fast the reference follows the empty tray (0: never, 1: at once).
    """

    roi: tuple[int, int, int, int] | None = None
    min_score: float = 0.5
    window: int = 8
    min_votes: int = 5
    unknown_after: float = 4.0
    background_label: str | None = None
    background_frames: int = 5
    change_threshold: float = 30.0
    occupied_fraction: float = 0.03
    enter_frames: int = 2
    leave_frames: int = 3
    background_adapt: float = 0.05

    def __post_init__(self) -> None:
        if self.roi is not None:
            if len(self.roi) != 4 or self.roi[2] <= 0 or self.roi[3] <= 0 or min(self.roi[:2]) < 0:
                raise OptionsError(f"roi must be x,y,width,height with x,y >= 0 and a positive size, got {self.roi}")
        if not 0.0 <= self.min_score <= 1.0:
            raise OptionsError(f"min_score must be within 0-1, got {self.min_score}")
        if self.window < 1 or not 1 <= self.min_votes <= self.window:
            raise OptionsError(f"need 1 <= min_votes <= window, got {self.min_votes} of {self.window}")
        if self.min_votes * 2 <= self.window:
            raise OptionsError(f"min_votes must be a majority of window (more than {self.window / 2:g}), got {self.min_votes}")
        if self.unknown_after <= 0:
            raise OptionsError(f"unknown_after must be positive seconds, got {self.unknown_after}")
        if self.background_frames < 1 or self.enter_frames < 1 or self.leave_frames < 1:
            raise OptionsError("background_frames, enter_frames and leave_frames must be at least 1")
        if not 0.0 < self.occupied_fraction < 1.0:
            raise OptionsError(f"occupied_fraction must be between 0 and 1, got {self.occupied_fraction}")
        if not 0.0 <= self.background_adapt <= 1.0:
            raise OptionsError(f"background_adapt must be within 0-1, got {self.background_adapt}")


def _share_changed(difference: np.ndarray, threshold: float) -> float:
    """Share of pixels whose largest channel difference exceeds ``threshold``."""
    magnitude = np.abs(difference)
    largest = magnitude[..., 0]
    for channel in range(1, magnitude.shape[2]):  # NumPy's max over a last axis of 3 takes ten times as long
        largest = np.maximum(largest, magnitude[..., channel])
    return float(np.count_nonzero(largest > threshold)) / int(largest.size)


class TrayMonitor:
    """Tells an occupied tray from an empty one by difference to an empty-tray reference."""

    def __init__(self, options: CheckoutOptions = CheckoutOptions(), reference: np.ndarray | None = None):
        """Args:
        options: Thresholds (``change_threshold``, ``occupied_fraction``, ``background_*``).
        reference: A BGR picture of the empty tray region; learned from the first frames if None.
        """
        self.options = options
        self._reference: np.ndarray | None = None
        self._learning: list[np.ndarray] = []
        self.changed_fraction = 0.0  # of the last frame, for overlays and tuning
        if reference is not None:
            self._reference = self._small(reference)

    def relearn(self) -> None:
        """Forget the empty tray (the camera changed resolution): learn it again from the next steady frames."""
        self._reference = None
        self._learning.clear()

    @property
    def ready(self) -> bool:
        """True once there is an empty-tray reference."""
        return self._reference is not None

    def _small(self, tray: np.ndarray) -> np.ndarray:
        # Shrunk by a whole factor to at most _MONITOR_WIDTH: OpenCV averages whole blocks several times faster
        # than fractional ones (240 px to 60 in a third of the time of 240 to 64). The pixels at the right and
        # bottom edges that do not fill a block are left out.
        factor = -(-tray.shape[1] // _MONITOR_WIDTH)
        small = tray
        if factor > 1:
            width, height = tray.shape[1] // factor, max(1, tray.shape[0] // factor)
            small = cv2.resize(tray[: height * factor, : width * factor], (width, height), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)

    def _changed(self, small: np.ndarray) -> float:
        assert self._reference is not None
        if small.shape != self._reference.shape:  # the camera changed resolution or aspect
            small = cv2.resize(small, self._reference.shape[1::-1], interpolation=cv2.INTER_AREA)
        difference = small - self._reference
        # A global exposure change moves every pixel alike: take the typical shift out
        # (the median of a quarter of the pixels estimates it as well as all of them).
        difference -= np.median(difference.reshape(-1, 3)[::4], axis=0)
        return _share_changed(difference, self.options.change_threshold)

    def update(self, tray: np.ndarray, empty_hint: bool | None = None) -> bool | None:
        """Look at one tray image.

        Args:
            tray: BGR tray region of the frame.
            empty_hint: True when the caller knows the tray is empty now (lets the
                reference follow lighting drift).

        Returns:
            True (occupied), False (empty), or None while the reference is still being learned.
        """
        small = self._small(tray)
        if self._reference is None:
            # Learn from a run of steady frames; an item or a hand passing restarts the run.
            options = self.options
            if self._learning and small.shape != self._learning[-1].shape:  # the camera changed resolution or aspect
                self._learning.clear()
            if (
                self._learning
                and _share_changed(small - self._learning[-1], options.change_threshold) > options.occupied_fraction
            ):
                self._learning.clear()
            self._learning.append(small)
            if len(self._learning) >= self.options.background_frames:
                self._reference = np.mean(self._learning, axis=0)
                self._learning.clear()
                logger.info("learned the empty tray from %d frames", self.options.background_frames)
            return None
        self.changed_fraction = self._changed(small)
        occupied = self.changed_fraction > self.options.occupied_fraction
        if empty_hint and not occupied and self.options.background_adapt:
            rate = self.options.background_adapt
            if small.shape == self._reference.shape:
                self._reference = (1 - rate) * self._reference + rate * small
        return occupied


@dataclasses.dataclass
class _Presence:
    """One item on the tray, from arrival to departure."""

    first_seen: float
    votes: collections.deque[tuple[str | None, float]]  # (label or None, score) of the last `window` classified frames
    classified: int = 0
    decided: bool = False


class CheckoutLogic:
    """Per-frame observations in, checkout events out (one decision per item presence)."""

    def __init__(self, options: CheckoutOptions = CheckoutOptions(), source_id: str = "", lane: str = ""):
        self.options = options
        self.source_id = source_id
        self.lane = lane
        self._presence: _Presence | None = None
        self._occupied_run = 0
        self._empty_run = 0

    @property
    def occupied(self) -> bool:
        """True while an item presence is open."""
        return self._presence is not None

    def is_empty_prediction(self, prediction: Prediction) -> bool:
        """True when the model itself says the tray is empty (``background_label`` mode)."""
        label = self.options.background_label
        return label is not None and prediction.label == label and prediction.score >= self.options.min_score

    def decide_photo(self, timestamp: float, prediction: Prediction) -> list[Event]:
        """The event for a photo that shows one item by itself (a folder of product photos).

        Recognized when its top score reaches ``min_score``, else unknown with that label as the candidate.
        """
        if prediction.score >= self.options.min_score:
            return [
                ProductRecognized(
                    prediction.label, round(prediction.score, 4), timestamp, timestamp, 1, self.source_id, self.lane
                )
            ]
        return [UnknownProduct(timestamp, timestamp, 1, ((prediction.label, 1),), self.source_id, self.lane)]

    def update(self, timestamp: float, occupied: bool, prediction: Prediction | None) -> list[Event]:
        """Advance by one frame.

        Args:
            timestamp: The frame's timestamp in seconds.
            occupied: Whether the tray looks occupied in this frame.
            prediction: The frame's top prediction, or None when the frame was not classified.

        Returns:
            The events this frame completes (usually none).
        """
        options = self.options
        if occupied:
            self._occupied_run, self._empty_run = self._occupied_run + 1, 0
        else:
            self._occupied_run, self._empty_run = 0, self._empty_run + 1
        if self._presence is None:
            if self._occupied_run < options.enter_frames:
                return []
            self._presence = _Presence(timestamp, collections.deque(maxlen=options.window))
        elif self._empty_run >= options.leave_frames:
            self._presence = None
            return []
        presence = self._presence
        if not occupied or prediction is None or presence.decided:
            return []
        presence.classified += 1
        confident = prediction.score >= options.min_score
        presence.votes.append((prediction.label if confident else None, prediction.score))
        counts = collections.Counter(label for label, _ in presence.votes if label is not None)
        if counts:
            label, votes = counts.most_common(1)[0]
            if votes >= options.min_votes:
                presence.decided = True
                score = float(np.mean([s for vote, s in presence.votes if vote == label]))
                return [
                    ProductRecognized(label, round(score, 4), presence.first_seen, timestamp, votes, self.source_id, self.lane)
                ]
        if timestamp - presence.first_seen >= options.unknown_after:
            presence.decided = True
            return [
                UnknownProduct(
                    presence.first_seen, timestamp, presence.classified, tuple(counts.most_common(3)), self.source_id, self.lane
                )
            ]
        return []
