"""Drift alerts: a kiosk notices a knocked camera, a dimmed lamp or a blurred lens from its empty tray.

Between two items the tray is empty, and an empty tray is the one thing a kiosk sees that
does not depend on what customers buy. For every stretch of empty-tray frames (of at least
:data:`MIN_STRETCH_FRAMES` frames) the monitor takes the median brightness (mean gray, 0-1)
and sharpness (mean absolute Laplacian at full resolution) of the tray region. The first
:data:`BASELINE_STRETCHES` stretches of a healthy kiosk are its **baseline**, kept in the fleet
store, so that later runs compare against the kiosk's own camera, light and tray.

Over the last ``window`` stretches (the last ``window`` items), the medians are compared with
the baseline: ``brightness_change`` and ``sharpness_change`` are relative changes, and a
:class:`DriftAlert` names the statistic, its value and the threshold it crossed.

Measured on the demo video and three videos of other photos on other trays (``bench/drift.py``):
an empty-tray stretch varies by at most 2% in brightness and sharpness within one video, while
item figures vary by product (12 items of the demo video as a baseline raised false alerts on
every video of other photos), and a reference from the conversion's evaluation photos cannot
be used at all (the demo tray region is 0.105 brighter than those photos, as far as a 40%
darker lamp moves it the other way).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from pathlib import Path

import cv2
import msgspec
import numpy as np

from ..errors import FleetError
from ..jsonfile import write_json_file
from .messages import DriftAlert

__all__ = ["BASELINE_STRETCHES", "DriftBaseline", "DriftMonitor", "DriftWindow", "tray_figures"]

logger = logging.getLogger(__name__)

#: Empty-tray stretches of a healthy kiosk that make its baseline.
BASELINE_STRETCHES = 5
#: Empty frames a stretch needs to count (shorter gaps between items are skipped).
MIN_STRETCH_FRAMES = 3
#: Relative changes from the baseline that raise an alert.
BRIGHTNESS_THRESHOLD = 0.10
SHARPNESS_THRESHOLD = 0.25


def tray_figures(tray: np.ndarray) -> tuple[float, float]:
    """``(brightness, sharpness)`` of a BGR tray region: mean gray in 0-1, and mean absolute Laplacian of the gray."""
    gray = cv2.cvtColor(tray, cv2.COLOR_BGR2GRAY) if tray.ndim == 3 else tray
    gray = gray.astype(np.float32)
    return float(gray.mean() / 255.0), float(np.abs(cv2.Laplacian(gray, cv2.CV_32F)).mean())


class DriftBaseline(msgspec.Struct, frozen=True, kw_only=True):
    """Per lane: the brightness and sharpness of the kiosk's empty tray when it was healthy."""

    lanes: dict[str, tuple[float, float]] = {}
    stretches: int = BASELINE_STRETCHES

    def save(self, path: Path) -> None:
        write_json_file(path, self, durable=True)

    @classmethod
    def load(cls, path: Path) -> DriftBaseline | None:
        if not path.is_file():
            return None
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise FleetError(f"{path} is unreadable ({exc}); remove it and the kiosk learns its baseline again") from exc


@dataclasses.dataclass(frozen=True)
class DriftWindow:
    """The recent items of every lane, for the health report."""

    items: int
    unknown_rate: float
    score_histogram: list[int]


class DriftMonitor:
    """Each lane's empty tray against the kiosk's baseline; alerts when the recent stretches moved away from it."""

    def __init__(self, baseline_file: Path | None = None, window: int = 3):
        """Args:
        baseline_file: Where the baseline is kept (learned from the first stretches when the file is missing).
        window: Empty-tray stretches compared with the baseline.
        """
        self.baseline_file = baseline_file
        self.window = window
        self._lock = threading.Lock()
        self._baseline = DriftBaseline.load(baseline_file) if baseline_file is not None else None
        self._learning: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self._stretch: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self._recent: dict[str, collections.deque[tuple[float, float]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=window)
        )
        self._items: collections.deque[tuple[float, bool]] = collections.deque(maxlen=200)  # (score, unknown), every lane
        self.stretches_seen = 0
        self._active: dict[str, set[str]] = {}  # statistics in alert now, by lane
        self.alerts_raised: list[tuple[int, str, DriftAlert]] = []  # (stretch number, lane, alert), in order

    @property
    def learned(self) -> bool:
        return self._baseline is not None

    def frame(self, lane: str, tray: np.ndarray | None, occupied: bool | None) -> list[DriftAlert]:
        """One frame of a lane: an empty tray adds to the current stretch; the first occupied frame closes it.

        Returns:
            Alerts raised by the stretch this frame closed (usually none).
        """
        if occupied is None or tray is None:  # the pipeline is still learning the empty tray
            return []
        if not occupied:
            figures = tray_figures(tray)
            with self._lock:
                self._stretch[lane].append(figures)
            return []
        with self._lock:
            stretch = self._stretch.pop(lane, [])
            if len(stretch) < MIN_STRETCH_FRAMES:
                return []
            self.stretches_seen += 1
            figures = (float(np.median([f[0] for f in stretch])), float(np.median([f[1] for f in stretch])))
            if self._baseline is None:
                self._learn(lane, figures)
                return []
            base = self._baseline.lanes.get(lane)
            recent = self._recent[lane]
            recent.append(figures)
            if base is None or len(recent) < self.window:
                return []
            alerts = _compare(base, list(recent))
            active = {alert.statistic for alert in alerts}
            cleared = self._active.get(lane, set()) - active
            if cleared:
                logger.info(
                    "drift%s: %s back within the thresholds", f" in lane {lane}" if lane else "", ", ".join(sorted(cleared))
                )
            for alert in alerts:
                self.alerts_raised.append((self.stretches_seen, lane, alert))
                if alert.statistic in self._active.get(lane, set()):
                    continue  # said when it began
                logger.warning(
                    "drift%s: %s %+.2f over the last %d empty-tray stretches (threshold %.2f): check the camera, its light "
                    "and the tray region",
                    f" in lane {lane}" if lane else "",
                    alert.statistic,
                    alert.value,
                    alert.window,
                    alert.threshold,
                )
            self._active[lane] = active
            return alerts

    def item(self, score: float, unknown: bool) -> None:
        """An item was decided (one event), for the health report's unknown rate and score histogram."""
        with self._lock:
            self._items.append((score, unknown))

    def _learn(self, lane: str, figures: tuple[float, float]) -> None:
        self._learning[lane].append(figures)
        if all(len(stretches) >= BASELINE_STRETCHES for stretches in self._learning.values()):
            lanes = {
                name: (float(np.median([f[0] for f in values])), float(np.median([f[1] for f in values])))
                for name, values in self._learning.items()
            }
            self._baseline = DriftBaseline(lanes=lanes)
            if self.baseline_file is not None:
                self._baseline.save(self.baseline_file)
            logger.info("drift: the empty tray's baseline learned from %d stretches per lane", BASELINE_STRETCHES)

    def alerts(self) -> list[DriftAlert]:
        """The alerts of each lane's current window (empty: no drift now)."""
        with self._lock:
            if self._baseline is None:
                return []
            found = []
            for lane, recent in self._recent.items():
                base = self._baseline.lanes.get(lane)
                if base is not None and len(recent) >= self.window:
                    found.extend(_compare(base, list(recent)))
            return found

    def snapshot(self) -> DriftWindow:
        """The recent items of every lane: how many, the unknown rate, the score histogram (ten bins of 0.1)."""
        with self._lock:
            items = list(self._items)
        scores = [score for score, unknown in items if not unknown]
        histogram = np.histogram(scores, bins=10, range=(0.0, 1.0))[0] if scores else np.zeros(10, int)
        unknown_rate = sum(unknown for _, unknown in items) / len(items) if items else 0.0
        return DriftWindow(len(items), round(unknown_rate, 4), [int(v) for v in histogram])


def _compare(base: tuple[float, float], recent: list[tuple[float, float]]) -> list[DriftAlert]:
    """Alerts for the window's median brightness and sharpness against the baseline's."""
    alerts = []
    for index, (statistic, threshold) in enumerate(
        (("brightness_change", BRIGHTNESS_THRESHOLD), ("sharpness_change", SHARPNESS_THRESHOLD))
    ):
        reference = base[index]
        if reference <= 0:
            continue
        change = float(np.median([figures[index] for figures in recent])) / reference - 1.0
        if abs(change) >= threshold:
            alerts.append(DriftAlert(statistic=statistic, value=round(change, 4), threshold=threshold, window=len(recent)))
    return alerts
