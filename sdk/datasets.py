"""Image data for calibration and evaluation.

A data argument is either

* a folder with one subfolder per class, named as the label (images anywhere below it),
  or a folder of images with no subfolders (unlabeled: fine for calibration), or
* a list file with lines ``relative/path.jpg, class_id[, ...]``, paths relative to the
  list file's folder (the format of the grocery-store dataset's ``train.txt``).

Class indices come from the labels file (one label a line, in output-index order) when
one is given, never from alphabetical folder order. Unreadable or non-image files are
skipped and counted, never fatal one by one.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError

__all__ = ["LabeledImage", "ImageSet", "check_labels", "read_labels", "read_image_set", "read_image", "iter_images"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LabeledImage:
    """One image file and its class index (None when unlabeled)."""

    path: Path
    label_index: int | None


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """The images named by one data argument."""

    path: Path  # the class folder or list file named
    images: tuple[LabeledImage, ...]
    labeled: bool

    def spread_over_classes(self, count: int, seed: int = 0) -> list[LabeledImage]:
        """Up to ``count`` images taken round-robin over the classes, shuffled per class.

        The order is deterministic for a given seed, so repeated conversions calibrate on
        the same images. Callers read further down the list when some files are unreadable.
        """
        by_class: dict[int | None, list[LabeledImage]] = {}
        for item in self.images:
            by_class.setdefault(item.label_index, []).append(item)
        rng = random.Random(seed)
        queues = []
        for key in sorted(by_class, key=lambda k: -1 if k is None else k):
            members = list(by_class[key])
            rng.shuffle(members)
            queues.append(members)
        ordered: list[LabeledImage] = []
        depth = 0
        while len(ordered) < count and any(depth < len(q) for q in queues):
            ordered.extend(q[depth] for q in queues if depth < len(q))
            depth += 1
        return ordered[:count]


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read a labels file: one label a line, in the model's output-index order.

    A UTF-8 byte-order mark (Notepad writes one) and Windows line endings are taken off; blank
    lines at the end are ignored.

    Raises:
        DataError: The file is missing, empty, has a blank label between others, or repeats a label.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read labels file {path}: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"labels file {path} has no labels (expected one label a line)")
    return check_labels([line.strip() for line in lines], f"labels file {path}")


def check_labels(labels: Sequence[str], where: str) -> tuple[str, ...]:
    """The labels as a tuple, refused when one is blank or repeated (each output index needs its own name).

    Raises:
        DataError: Naming ``where`` and the line (1-based) of the first bad label.
    """
    seen: set[str] = set()
    for line, label in enumerate(labels, start=1):
        if not str(label).strip():
            raise DataError(
                f"{where} has a blank label at line {line}: every output index needs a name, so a blank line would "
                "shift the labels after it; remove it or name that output"
            )
        if label in seen:
            raise DataError(f"{where} lists '{label}' twice (line {line}); each output index needs its own label")
        seen.add(label)
    return tuple(str(label).strip() for label in labels)


def read_image_set(source: str | Path, labels: Sequence[str] | None = None) -> ImageSet:
    """List the images of a data argument (a class folder or a list file).

    Args:
        source: Folder or list file.
        labels: Labels in output-index order. With a class folder, each subfolder must be
            one of them; without, subfolders map to indices in sorted order (the
            convention of ``keras.utils.image_dataset_from_directory``).

    Returns:
        The image set (files are not opened yet).

    Raises:
        DataError: The path does not exist, a list line is malformed, a class is unknown,
            or no file was found.
    """
    source = Path(source)
    if source.is_dir():
        image_set = _read_folder(source, labels)
    elif source.is_file():
        image_set = _read_list_file(source, labels)
    else:
        raise DataError(f"data path {source} does not exist (expected a class folder or a list file)")
    if not image_set.images:
        raise DataError(f"no image files found in {source}")
    return image_set


def _read_folder(folder: Path, labels: Sequence[str] | None) -> ImageSet:
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return ImageSet(folder, tuple(LabeledImage(p, None) for p in files), labeled=False)
    if labels is None:
        names = [p.name for p in class_dirs]
        logger.warning(
            "no labels file given: class indices of %s follow sorted folder names (%s ...); pass --labels to be sure",
            folder,
            ", ".join(names[:3]),
        )
        index_of = {name: i for i, name in enumerate(names)}
    else:
        index_of = {name: i for i, name in enumerate(labels)}
    images: list[LabeledImage] = []
    for class_dir in class_dirs:
        if class_dir.name not in index_of:
            raise DataError(
                f"folder '{class_dir.name}' in {folder} is not a label in the labels file; rename it or add the label"
            )
        index = index_of[class_dir.name]
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        images.extend(LabeledImage(p, index) for p in files)
    return ImageSet(folder, tuple(images), labeled=True)


def _read_list_file(list_file: Path, labels: Sequence[str] | None) -> ImageSet:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{list_file} is not a text list file (expected lines 'relative/path.jpg, class_id')") from exc
    except OSError as exc:
        raise DataError(f"cannot read list file {list_file}: {exc.strerror or exc}") from exc
    base = list_file.parent
    images: list[LabeledImage] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 2 or not fields[0]:
            raise DataError(f"{list_file}:{number}: expected 'relative/path.jpg, class_id', got {line!r}")
        try:
            index = int(fields[1])
        except ValueError:
            raise DataError(f"{list_file}:{number}: class id {fields[1]!r} is not an integer") from None
        if index < 0 or (labels is not None and index >= len(labels)):
            bound = f"0..{len(labels) - 1}" if labels is not None else "a non-negative integer"
            raise DataError(f"{list_file}:{number}: class id {index} is out of range (expected {bound})")
        images.append(LabeledImage(base / fields[0], index))
    return ImageSet(list_file, tuple(images), labeled=True)


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to a BGR uint8 array, or None if it is not a readable image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return image


def why_unreadable(path: Path) -> str:
    """Why :func:`read_image` returned None for ``path``, as the end of a sentence starting with the path."""
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a folder, not an image file"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    return "is not an image OpenCV can decode (JPEG, PNG, BMP, WebP, TIFF...)"


def iter_images(items: Sequence[LabeledImage], skipped: list[Path]) -> Iterator[tuple[LabeledImage, np.ndarray]]:
    """Yield ``(item, bgr_image)`` for each readable file; unreadable paths go to ``skipped``."""
    for item in items:
        image = read_image(item.path)
        if image is None:
            logger.debug("skipping unreadable image %s", item.path)
            skipped.append(item.path)
            continue
        yield item, image
