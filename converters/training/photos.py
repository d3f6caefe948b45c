"""Training photos kept in memory: what fine-tuning, distillation and QAT learn from.

Photos are decoded once and kept as uint8 pixels at the model's input size (a quarter of
the memory of float32); batches are normalised with the model's own mean and std, which
gives exactly the values of :func:`tillsight.preprocess.preprocess`. Unlabeled photos
(camera frames from a store) carry the label ``-1``: distillation learns from them, plain
fine-tuning needs labels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from tillsight.datasets import ImageSet, iter_images
from tillsight.errors import DataError
from tillsight.preprocess import InputSpec, model_pixels

from .._tf import tf

__all__ = ["UNLABELED", "TrainingPhotos", "load_training_photos", "shuffled_batches"]

logger = logging.getLogger(__name__)

UNLABELED = -1  # the label of a photo without one
BATCH = 32
_MIN_PHOTOS = 8


@dataclasses.dataclass(frozen=True)
class TrainingPhotos:
    """Photos at the model's input size, ready to batch; labels are ``-1`` where unknown."""

    pixels: np.ndarray  # (N, H, W, 3) uint8, in the model's colour order
    labels: np.ndarray  # (N,) int32 class indices, UNLABELED where unknown
    spec: InputSpec  # mean and std that turn pixels into model input
    num_classes: int
    path: str  # where they came from (a folder, a list file; two joined by " + ")

    @property
    def labeled_count(self) -> int:
        """How many photos have a label."""
        return int(np.count_nonzero(self.labels != UNLABELED))

    def steps_per_epoch(self, batch_size: int = BATCH) -> int:
        """Batches in one pass over the photos."""
        return math.ceil(len(self.labels) / batch_size)

    def normalise(self, pixels: tf.Tensor) -> tf.Tensor:
        """Model input from uint8 or float pixels (the values ``preprocess`` gives)."""
        mean = tf.constant(self.spec.mean, tf.float32)
        std = tf.constant(self.spec.std, tf.float32)
        return (tf.cast(pixels, tf.float32) - mean) / std

    def sample(self, count: int = BATCH) -> np.ndarray:
        """Up to ``count`` photos spread evenly over the set (files sorted by class give every class a say), as model input."""
        picks = np.unique(np.linspace(0, len(self.labels) - 1, min(count, len(self.labels))).astype(int))
        return np.asarray(self.normalise(self.pixels[picks]), np.float32)

    def subset(self, indices: np.ndarray) -> TrainingPhotos:
        """These photos at ``indices`` only."""
        return dataclasses.replace(self, pixels=self.pixels[indices], labels=self.labels[indices])

    def with_unlabeled(self, other: TrainingPhotos) -> TrainingPhotos:
        """These photos followed by ``other``'s, taken as unlabeled."""
        if other.pixels.shape[1:] != self.pixels.shape[1:]:
            raise DataError(f"photos of {other.path} are {other.pixels.shape[1:]}, not {self.pixels.shape[1:]}")
        return dataclasses.replace(
            self,
            pixels=np.concatenate([self.pixels, other.pixels]),
            labels=np.concatenate([self.labels, np.full(len(other.labels), UNLABELED, np.int32)]),
            path=f"{self.path} + {other.path}",
        )

    def dataset(self, one_hot: bool, batch_size: int = BATCH, seed: int = 0) -> tf.data.Dataset:
        """Shuffled, augmented (mirror, brightness), normalised batches of ``(images, labels)``."""
        if self.labeled_count < len(self.labels):
            raise DataError(
                f"{len(self.labels) - self.labeled_count} photos of {self.path} have no label; fine-tuning needs labels"
            )
        num_classes = self.num_classes

        def prepare(pixels: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.image.random_flip_left_right(tf.cast(pixels, tf.float32), seed=seed)
            image = tf.clip_by_value(image + tf.random.uniform([], -12.0, 12.0, seed=seed), 0.0, 255.0)
            target = tf.one_hot(label, num_classes) if one_hot else label
            return self.normalise(image), target

        return shuffled_batches((self.pixels, self.labels), prepare, batch_size, seed)


def shuffled_batches(slices: tuple[Any, ...], prepare: Any, batch_size: int = BATCH, seed: int = 0) -> tf.data.Dataset:
    """Per-photo arrays, reshuffled every epoch, mapped by ``prepare`` in parallel, batched."""
    return (
        tf.data.Dataset.from_tensor_slices(slices)
        .shuffle(len(slices[0]), seed=seed, reshuffle_each_iteration=True)
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def load_training_photos(
    image_set: ImageSet,
    spec: InputSpec,
    num_classes: int,
    progress: bool = False,
    need_labels: bool = True,
    desc: str = "training photos",
) -> TrainingPhotos:
    """Decode every readable photo of a set at the model's input size.

    Args:
        image_set: The photos (a class folder or list file; any folder when labels are not needed).
        spec: The model's input size, colour order, mean and std.
        num_classes: The model's outputs, to check labels against.
        progress: A progress bar on stderr.
        need_labels: Refuse a set without labels (plain fine-tuning); distillation takes any photos.
        desc: Label of the progress bar and of errors.

    Raises:
        DataError: Labels are needed and missing, a label is outside the model's classes, or too few photos are readable.
    """
    if need_labels and not image_set.labeled:
        raise DataError(f"{desc} {image_set.path} has no labels: use a class folder or a list file")
    from tqdm import tqdm

    skipped: list = []
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    for item, image in tqdm(iter_images(image_set.images, skipped), total=len(image_set.images), desc=desc, disable=not progress):
        label = UNLABELED if item.label_index is None else int(item.label_index)
        if not (label == UNLABELED or 0 <= label < num_classes):
            raise DataError(f"{item.path} has class {label}; the model has {num_classes} classes")
        pixels.append(model_pixels(image, spec))
        labels.append(label)
    if len(labels) < _MIN_PHOTOS:
        raise DataError(f"{desc} {image_set.path} has {len(labels)} readable photos; at least {_MIN_PHOTOS} are needed")
    if skipped:
        logger.warning("%s: skipped %d unreadable or non-image files", desc, len(skipped))
    return TrainingPhotos(np.stack(pixels), np.asarray(labels, np.int32), spec, num_classes, str(image_set.path))
