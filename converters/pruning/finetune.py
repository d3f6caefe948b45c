"""Fine-tuning on labeled photos: what lets a pruned model win back its accuracy.

Photos are decoded once and kept as uint8 pixels at the model's input size (a quarter of
the memory of float32); batches are normalised with the model's own mean and std, which
gives exactly the values of :func:`tillsight.preprocess.preprocess`, and lightly augmented
(mirror, brightness) so a few epochs on a small set do not overfit. The loss follows what
the model outputs: probabilities, logits, or independent sigmoid scores.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tillsight.datasets import ImageSet, iter_images
from tillsight.errors import DataError
from tillsight.preprocess import InputSpec, model_pixels

from .._tf import keras, tf

__all__ = ["TrainingPhotos", "fine_tune", "load_training_photos"]

logger = logging.getLogger(__name__)

_BATCH = 32
_MIN_PHOTOS = 8


@dataclasses.dataclass(frozen=True)
class TrainingPhotos:
    """Labeled photos at the model's input size, ready to batch."""

    pixels: np.ndarray  # (N, H, W, 3) uint8, in the model's colour order
    labels: np.ndarray  # (N,) int32 class indices
    spec: InputSpec  # mean and std that turn pixels into model input
    num_classes: int
    source: str

    def steps_per_epoch(self, batch_size: int = _BATCH) -> int:
        """Batches in one pass over the photos."""
        return math.ceil(len(self.labels) / batch_size)

    def dataset(self, one_hot: bool, batch_size: int = _BATCH, seed: int = 0) -> tf.data.Dataset:
        """Shuffled, augmented, normalised batches of ``(images, labels)``."""
        mean = tf.constant(self.spec.mean, tf.float32)
        std = tf.constant(self.spec.std, tf.float32)
        num_classes = self.num_classes

        def prepare(pixels: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.image.random_flip_left_right(tf.cast(pixels, tf.float32), seed=seed)
            image = tf.clip_by_value(image + tf.random.uniform([], -12.0, 12.0, seed=seed), 0.0, 255.0)
            target = tf.one_hot(label, num_classes) if one_hot else label
            return (image - mean) / std, target

        return (
            tf.data.Dataset.from_tensor_slices((self.pixels, self.labels))
            .shuffle(len(self.labels), seed=seed, reshuffle_each_iteration=True)
            .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )


def load_training_photos(
    image_set: ImageSet, spec: InputSpec, num_classes: int, progress: bool = False
) -> TrainingPhotos:
    """Decode every readable labeled photo of a set at the model's input size.

    Raises:
        DataError: The set has no labels, a label is outside the model's classes, or too few photos are readable.
    """
    if not image_set.labeled:
        raise DataError(f"fine-tuning data {image_set.source} has no labels: use a class folder or a list file")
    from tqdm import tqdm

    skipped: list = []
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    for item, image in tqdm(
        iter_images(image_set.images, skipped), total=len(image_set.images), desc="fine-tuning photos", disable=not progress
    ):
        if not 0 <= int(item.label_index) < num_classes:
            raise DataError(f"{item.path} has class {item.label_index}; the model has {num_classes} classes")
        pixels.append(model_pixels(image, spec))
        labels.append(int(item.label_index))
    if len(labels) < _MIN_PHOTOS:
        raise DataError(
            f"fine-tuning data {image_set.source} has {len(labels)} readable photos; at least {_MIN_PHOTOS} are needed"
        )
    if skipped:
        logger.warning("fine-tuning: skipped %d unreadable or non-image files", len(skipped))
    return TrainingPhotos(np.stack(pixels), np.asarray(labels, np.int32), spec, num_classes, str(image_set.source))


def _loss(activation: str) -> tuple[Any, bool]:
    """The training loss for the model's output kind, and whether labels go one-hot."""
    if activation == "sigmoid":
        return keras.losses.BinaryCrossentropy(), True
    return keras.losses.SparseCategoricalCrossentropy(from_logits=activation == "softmax-added"), False


class _EpochBar(keras.callbacks.Callback):
    """One progress bar per epoch on stderr."""

    def __init__(self, epochs: int, steps: int, desc: str) -> None:
        super().__init__()
        self.epochs, self.steps, self.desc = epochs, steps, desc
        self.bar: Any = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.steps, desc=f"{self.desc} epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.bar.close()


def fine_tune(
    model: Any,
    photos: TrainingPhotos,
    activation: str,
    epochs: int,
    learning_rate: float,
    callbacks: Sequence[Any] = (),
    progress: bool = False,
    desc: str = "fine-tune",
) -> dict[str, Any]:
    """Train ``model`` in place on the photos with Adam and a cosine-decayed learning rate.

    Args:
        model: The Keras model (changed in place).
        photos: From :func:`load_training_photos`.
        activation: What the model outputs: ``softmax``, ``softmax-added`` (logits) or ``sigmoid``.
        epochs: Passes over the photos.
        learning_rate: Adam's starting rate.
        callbacks: Extra Keras callbacks (e.g. a pruning schedule).
        progress: A progress bar per epoch.
        desc: Label of the progress bars.

    Returns:
        ``{"epochs", "photos", "seconds", "loss"}`` with the mean loss of each epoch.
    """
    loss, one_hot = _loss(activation)
    steps = photos.steps_per_epoch()
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, epochs * steps))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, jit_compile=False)
    extra = [_EpochBar(epochs, steps, desc)] if progress else []
    start = time.perf_counter()
    history = model.fit(
        photos.dataset(one_hot), epochs=epochs, verbose=0, shuffle=False, callbacks=[*callbacks, *extra]
    )  # the dataset shuffles itself
    seconds = time.perf_counter() - start
    losses = [round(float(value), 4) for value in history.history.get("loss", [])]
    logger.info("%s: %d epochs on %d photos in %.0f s, loss %s", desc, epochs, len(photos.labels), seconds, losses)
    return {"epochs": epochs, "photos": int(len(photos.labels)), "seconds": round(seconds, 1), "loss": losses}
