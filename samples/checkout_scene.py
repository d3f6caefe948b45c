"""A simulated self-checkout camera: a counter with a tray, product photos placed on it.

Used by ``make_checkout_video.py`` to make the demo video. The products are real grocery-store photos (MIT licensed, see the dataset's README).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

FRAME_SIZE = (480, 360)  # width, height of a camera frame
TRAY = (120, 40, 280, 280)  # x, y, width, height of the tray region of interest


def photos_by_class(data: Path, list_name: str, classes) -> dict[str, list[Path]]:
    """Photo paths of ``classes`` in one of the dataset's list files, by class name."""
    with open(data / "classes.csv", newline="", encoding="utf-8") as handle:
        fine_id = {row[0]: int(row[1]) for row in list(csv.reader(handle))[1:]}
    wanted = {fine_id[name]: name for name in classes}
    found: dict[str, list[Path]] = {name: [] for name in classes}
    for line in (data / list_name).read_text().splitlines():
        path, class_id = (field.strip() for field in line.split(",")[:2])
        if int(class_id) in wanted:
            found[wanted[int(class_id)]].append(data / path)
    return found


def make_counter(rng: np.random.Generator) -> np.ndarray:
    """An empty counter: dark surround, a lighter textured tray, a little uneven light."""
    width, height = FRAME_SIZE
    frame = np.empty((height, width, 3), np.float32)
    frame[:] = rng.uniform(45, 70, 3)
    x, y, w, h = TRAY
    tray_colour = rng.uniform(150, 200, 3) * rng.uniform(0.85, 1.0, 3)
    frame[y : y + h, x : x + w] = tray_colour
    texture = cv2.GaussianBlur(rng.normal(0, 6, (height, width)).astype(np.float32), (0, 0), 3)
    frame += texture[..., None]
    light = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(1.0, 1.15), width, dtype=np.float32)
    frame *= light[None, :, None]
    cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), (90, 90, 90), 2)
    return np.clip(frame, 0, 255).astype(np.uint8)


def product_mask(size: int) -> np.ndarray:
    """A soft-edged rounded square: photos sit on the tray like an object, not a sticker."""
    mask = np.zeros((size, size), np.float32)
    radius = size // 6
    cv2.rectangle(mask, (radius, 0), (size - radius, size), 1.0, -1)
    cv2.rectangle(mask, (0, radius), (size, size - radius), 1.0, -1)
    for cx, cy in ((radius, radius), (size - radius, radius), (radius, size - radius), (size - radius, size - radius)):
        cv2.circle(mask, (cx, cy), radius, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, size / 80))


def place(counter: np.ndarray, photo: np.ndarray, center: tuple[float, float], size: int) -> np.ndarray:
    """``counter`` with ``photo`` resized to ``size`` and laid down at ``center`` (clipped at the edges)."""
    frame = counter.astype(np.float32)
    product = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = product_mask(size)
    shadow = cv2.GaussianBlur(mask, (0, 0), size / 25) * 0.35
    for layer, alpha, offset in ((None, shadow, size // 30), (product, mask, 0)):
        left = int(round(center[0] - size / 2)) + offset
        top = int(round(center[1] - size / 2)) + offset
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + size, frame.shape[1]), min(top + size, frame.shape[0])
        if x0 >= x1 or y0 >= y1:
            continue
        a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
        region = frame[y0:y1, x0:x1]
        if layer is None:
            frame[y0:y1, x0:x1] = region * (1 - a)
        else:
            frame[y0:y1, x0:x1] = region * (1 - a) + layer[y0 - top : y1 - top, x0 - left : x1 - left] * a
    return np.clip(frame, 0, 255).astype(np.uint8)


def camera_noise(frame: np.ndarray, rng: np.random.Generator, gain_jitter: float = 0.03) -> np.ndarray:
    """Sensor noise and a small exposure change, as between two frames of a real camera."""
    noisy = frame.astype(np.float32) * rng.uniform(1 - gain_jitter, 1 + gain_jitter)
    noisy += rng.normal(0, 2.5, frame.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)
