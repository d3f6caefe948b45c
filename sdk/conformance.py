"""The conformance set: a few dozen model inputs a bundle carries, with the top-1 its converting host measured.

A kiosk that reproduces those top-1 results runs the model as the host did: the right runtime,
delegate and library versions. One that does not must not take the bundle (a fleet rollout's
on-device acceptance check). The set is an artifact of the bundle (``conformance.npz``),
recorded with its sha256 in the manifest, so the bundle's signature covers it.

The inputs are the model's own input tensors (what :meth:`Classifier.prepare` makes of an
evaluation photo), so the check tests the runtime, not the JPEG decoder. Photos whose top
two scores are within :data:`MIN_MARGIN` are left out: a one-step rounding difference between
two correct int8 kernels may flip a near tie, and that is not a wrong runtime.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .bundle import CONFORMANCE_FILE, MANIFEST_NAME, ArtifactRecord, Bundle, read_bundle, write_manifest
from .bundle_metrics import percent_equal
from .classifier import Classifier, load_written
from .datasets import ImageSet, iter_images
from .errors import BundleError

__all__ = [
    "CONFORMANCE_FILE",
    "DEFAULT_CONFORMANCE_IMAGES",
    "MIN_MARGIN",
    "ConformanceResult",
    "add_conformance_set",
    "add_conformance_set_from_photos",
    "check_conformance",
    "has_conformance_set",
]

#: Inputs a conformance set holds by default (a 224 px uint8 input is 150 KB before compression).
DEFAULT_CONFORMANCE_IMAGES = 24
#: Photos whose top-1 score leads the second by less than this are not used.
MIN_MARGIN = 0.05


@dataclasses.dataclass(frozen=True)
class ConformanceResult:
    """How a device reproduced a bundle's conformance set.

    Attributes:
        inputs: How many inputs the set holds.
        agreement: Percent of them whose top-1 here is the converting host's.
        max_score_difference: The largest difference of any class score between here and the host.
    """

    inputs: int
    agreement: float
    max_score_difference: float


def add_conformance_set(bundle_dir: str | Path, classifier: Classifier, frames: Iterable[np.ndarray], count: int) -> int:
    """Write the conformance set of the bundle ``classifier`` was loaded from, and record it in the manifest.

    Call it on the converting host, before signing: it rewrites ``manifest.json``.

    Args:
        bundle_dir: The bundle folder (a conversion's staging folder).
        classifier: The bundle, loaded as on the device.
        frames: BGR photos to choose from (evaluation photos), in a spread over the classes.
        count: The most inputs to keep.

    Returns:
        How many inputs were written (0: none of the frames was clear enough, nothing written).
    """
    bundle_dir = Path(bundle_dir)
    inputs: list[np.ndarray] = []
    top1: list[int] = []
    scores: list[np.ndarray] = []
    for frame in frames:
        if len(inputs) >= count:
            break
        tensor = classifier.prepare(frame)
        frame_scores = classifier.infer(tensor)
        first, second = np.sort(frame_scores)[::-1][:2] if frame_scores.size > 1 else (frame_scores[0], 0.0)
        if first - second < MIN_MARGIN:
            continue
        inputs.append(tensor[0])
        top1.append(int(np.argmax(frame_scores)))
        scores.append(frame_scores.astype(np.float32))
    if not inputs:
        return 0
    buffer = io.BytesIO()
    arrays = {**_packed(np.stack(inputs)), "top1": np.array(top1, np.int32), "scores": np.stack(scores)}
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as the allow_pickle flag
    path = bundle_dir / CONFORMANCE_FILE
    path.write_bytes(buffer.getvalue())
    manifest = read_bundle(bundle_dir, verify=False).manifest
    artifacts = {**manifest.artifacts, CONFORMANCE_FILE: ArtifactRecord.of(path)}
    write_manifest(bundle_dir, dataclasses.replace(manifest, artifacts=artifacts))
    return len(inputs)


def _packed(inputs: np.ndarray) -> dict[str, np.ndarray]:
    """8-bit colour inputs as lossless WebP (a third of their zlib size: 56 KB a 224 px input); others as they are."""
    if inputs.dtype not in (np.uint8, np.int8) or inputs.ndim != 4 or inputs.shape[-1] != 3:
        return {"inputs": inputs}
    as_uint8 = inputs if inputs.dtype == np.uint8 else np.bitwise_xor(inputs.view(np.uint8), np.uint8(0x80))  # int8 + 128
    encoded = [cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].reshape(-1) for image in as_uint8]
    return {
        "webp": np.concatenate(encoded),
        "webp_offsets": np.cumsum([0] + [len(e) for e in encoded]),
        "signed": np.array(inputs.dtype == np.int8),
    }


def _unpacked(data: Any) -> np.ndarray:
    if "inputs" in data:
        return np.asarray(data["inputs"])
    webp, offsets = data["webp"], data["webp_offsets"]
    images: list[np.ndarray] = []
    for i in range(len(offsets) - 1):
        image = cv2.imdecode(webp[offsets[i] : offsets[i + 1]], cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"input {i} does not decode")
        images.append(np.asarray(image, np.uint8))
    stacked = np.stack(images)
    return np.bitwise_xor(stacked, np.uint8(0x80)).view(np.int8) if bool(data["signed"]) else stacked


def add_conformance_set_from_photos(bundle_dir: str | Path, photos: ImageSet, count: int = DEFAULT_CONFORMANCE_IMAGES) -> int:
    """The conformance set of a bundle this host has written, from its evaluation photos (a spread over the classes).

    Returns:
        How many inputs were written (see :func:`add_conformance_set`).
    """
    frames = (frame for _, frame in iter_images(photos.spread_over_classes(4 * count), []))
    with load_written(bundle_dir) as classifier:
        return add_conformance_set(bundle_dir, classifier, frames, count)


def has_conformance_set(bundle: Bundle) -> bool:
    """Whether the bundle carries a conformance set."""
    return CONFORMANCE_FILE in bundle.manifest.artifacts


def check_conformance(classifier: Classifier) -> ConformanceResult:
    """Run the loaded bundle's conformance set here and compare with the converting host's results.

    Raises:
        BundleError: The bundle carries no conformance set, or it does not fit the model.
    """
    bundle = classifier.bundle
    if bundle is None or not has_conformance_set(bundle):
        where = bundle.path if bundle is not None else "this model"
        raise BundleError(
            f"{where} carries no conformance set ({CONFORMANCE_FILE} in its {MANIFEST_NAME}); convert it again with this "
            "tillsight, or add one with `tillsight fleet conformance BUNDLE PHOTOS` and sign it again"
        )
    try:
        with np.load(bundle.path / CONFORMANCE_FILE, allow_pickle=False) as data:
            inputs, top1, scores = _unpacked(data), data["top1"], data["scores"]
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"{bundle.path / CONFORMANCE_FILE} cannot be read ({exc}); convert the bundle again") from exc
    if inputs.shape[0] == 0 or scores.shape != (inputs.shape[0], len(classifier.labels)):
        raise BundleError(f"{bundle.path / CONFORMANCE_FILE} does not fit the model's outputs; convert the bundle again")
    found = np.stack(classifier.infer_many([tensor[np.newaxis] for tensor in inputs]))
    agreement = percent_equal(np.argmax(found, axis=-1), top1, 2)
    return ConformanceResult(int(inputs.shape[0]), agreement, float(np.max(np.abs(found - scores))))
