"""Knowledge distillation: a student learns from a teacher's softened outputs.

The loss per photo is ``alpha * CE(label, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``
where ``_T`` means softmax of logits divided by the temperature ``T``; photos without a
label (camera frames from a store) get the distillation term alone, ``T^2 * KL``.
Sigmoid (multi-label) classifiers use the same form with per-class Bernoulli KL.

The teacher runs once per photo and view before training (:class:`TeacherCache`): the
student's augmentation is drawn from the same cached views (the photo and its mirror), so
teacher and student always see the same pixels and a 2-core machine never runs the
teacher inside the training step.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from tillsight.bundle import OutputActivation
from tillsight.profiles import DistillationOptions

from .._tf import keras, tf
from .finetune import TrainingSchedule, fit
from .photos import BATCH, UNLABELED, TrainingPhotos, shuffled_batches

__all__ = ["DistillationLoss", "TeacherCache", "kd_loss", "logits_of", "train_student"]

logger = logging.getLogger(__name__)

VIEWS = ("photo", "mirror")  # the augmentations whose teacher outputs are cached
_EPS = 1e-7


def logits_of(outputs: Any, activation: OutputActivation) -> Any:
    """Logits from a model's outputs (probabilities give logits up to a per-row constant, which softmax ignores)."""
    ops = keras.ops
    if activation == OutputActivation.SOFTMAX_ADDED:
        return outputs
    clipped = ops.clip(outputs, _EPS, 1.0 - _EPS)
    if activation == OutputActivation.SIGMOID:
        return ops.log(clipped) - ops.log(1.0 - clipped)
    return ops.log(clipped)


def kd_loss(
    student_logits: Any,
    teacher_logits: Any,
    labels_one_hot: Any,
    labeled: Any,
    alpha: float,
    temperature: float,
    multi_label: bool = False,
) -> Any:
    """Per-photo distillation loss.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        labels_one_hot: ``(B, C)`` one-hot labels (any values where unlabeled).
        labeled: ``(B,)`` 1.0 where the photo has a label, else 0.0.
        alpha: Weight of the label term on labeled photos.
        temperature: Softening of both distributions.
        multi_label: Independent sigmoid outputs instead of one softmax.

    Returns:
        ``(B,)`` losses.
    """
    ops = keras.ops
    t = float(temperature)
    if multi_label:
        p_teacher = ops.sigmoid(teacher_logits / t)
        log_s, log_not_s = ops.log_sigmoid(student_logits / t), ops.log_sigmoid(-student_logits / t)
        log_t, log_not_t = ops.log_sigmoid(teacher_logits / t), ops.log_sigmoid(-teacher_logits / t)
        kl = ops.mean(p_teacher * (log_t - log_s) + (1.0 - p_teacher) * (log_not_t - log_not_s), axis=-1)
        ce = -ops.mean(
            labels_one_hot * ops.log_sigmoid(student_logits) + (1.0 - labels_one_hot) * ops.log_sigmoid(-student_logits),
            axis=-1,
        )
    else:
        log_t = ops.log_softmax(teacher_logits / t, axis=-1)
        kl = ops.sum(ops.exp(log_t) * (log_t - ops.log_softmax(student_logits / t, axis=-1)), axis=-1)
        ce = -ops.sum(labels_one_hot * ops.log_softmax(student_logits, axis=-1), axis=-1)
    soft = t * t * kl
    return labeled * (alpha * ce + (1.0 - alpha) * soft) + (1.0 - labeled) * soft


@keras.saving.register_keras_serializable(package="tillsight")
class DistillationLoss(keras.losses.Loss):
    """:func:`kd_loss` on targets packed as ``[one-hot labels | labeled flag | teacher logits]``.

    A registered Keras object with its whole config: the trained model stays compiled with it, and the
    next step that rebuilds the graph (QAT after distilled pruning, a second cut) clones that compile state.
    """

    def __init__(self, num_classes: int, student_activation: OutputActivation, alpha: float, temperature: float) -> None:
        super().__init__(name="distillation")
        self.num_classes, self.student_activation = num_classes, student_activation
        self.alpha, self.temperature = alpha, temperature

    def get_config(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "student_activation": self.student_activation.value,
            "alpha": self.alpha,
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DistillationLoss:
        return cls(
            int(config["num_classes"]),
            OutputActivation(config["student_activation"]),
            float(config["alpha"]),
            float(config["temperature"]),
        )

    def call(self, y_true: Any, y_pred: Any) -> Any:
        c = self.num_classes
        return kd_loss(
            logits_of(y_pred, self.student_activation),
            y_true[:, c + 1 :],
            y_true[:, :c],
            y_true[:, c],
            self.alpha,
            self.temperature,
            multi_label=self.student_activation == OutputActivation.SIGMOID,
        )


def _in_view(images: Any, view: Any) -> Any:
    """An image (HWC) or a batch (NHWC) as cached view ``view`` sees it: the teacher's and the student's one definition."""
    return tf.where(tf.equal(view, VIEWS.index("mirror")), tf.reverse(images, [-2]), images)


class TeacherCache:
    """The teacher's logits for every photo in every cached view, computed once.

    Attributes:
        logits: ``(N, len(VIEWS), C)`` float32.
        images_run: How many images the teacher has been run on (``N * len(VIEWS)`` after construction).
    """

    def __init__(self, teacher: Any, photos: TrainingPhotos, activation: OutputActivation, progress: bool = False) -> None:
        from tqdm import tqdm

        count = len(photos.labels)
        self.logits = np.empty((count, len(VIEWS), photos.num_classes), np.float32)
        self.images_run = 0
        predict = tf.function(lambda images: logits_of(teacher(images, training=False), activation))
        with tqdm(total=count * len(VIEWS), desc="teacher outputs", disable=not progress) as bar:
            for start in range(0, count, 2 * BATCH):
                images = photos.normalise(photos.pixels[start : start + 2 * BATCH])
                for view in range(len(VIEWS)):
                    batch = _in_view(images, view)
                    self.logits[start : start + len(batch), view] = np.asarray(predict(batch))
                    self.images_run += len(batch)
                    bar.update(len(batch))

    def subset(self, indices: np.ndarray) -> TeacherCache:
        """The cached outputs of the photos at ``indices`` only (to go with ``photos.subset(indices)``)."""
        part = copy.copy(self)
        part.logits = self.logits[indices]
        return part

    def top1(self) -> np.ndarray:
        """The teacher's top class of each photo, as it is (not mirrored)."""
        return np.argmax(self.logits[:, VIEWS.index("photo")], axis=-1)

    def dataset(self, photos: TrainingPhotos, batch_size: int = BATCH, seed: int = 0) -> tf.data.Dataset:
        """Shuffled batches of ``(student input, packed targets)``, one random cached view per photo."""
        num_classes = photos.num_classes

        def prepare(pixels: tf.Tensor, label: tf.Tensor, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            view = tf.random.uniform([], 0, len(VIEWS), tf.int32, seed=seed)
            image = _in_view(tf.cast(pixels, tf.float32), view)
            labeled = tf.not_equal(label, UNLABELED)
            one_hot = tf.one_hot(tf.maximum(label, 0), num_classes) * tf.cast(labeled, tf.float32)
            target = tf.concat([one_hot, tf.cast(labeled, tf.float32)[tf.newaxis], tf.gather(logits, view)], axis=0)
            return photos.normalise(image), target

        return shuffled_batches((photos.pixels, photos.labels, self.logits), prepare, batch_size, seed)


def train_student(
    student: Any,
    cache: TeacherCache,
    photos: TrainingPhotos,
    student_activation: OutputActivation,
    distillation: DistillationOptions,
    schedule: TrainingSchedule,
) -> dict[str, Any]:
    """Train ``student`` in place on the teacher's cached outputs (and the labels where there are some).

    Args:
        student: The Keras model to train (changed in place).
        cache: The teacher's logits for ``photos``.
        photos: Labeled, unlabeled or mixed photos (the ones the cache was built on).
        student_activation: What the student outputs: ``softmax``, ``softmax-added`` or ``sigmoid``.
        distillation: Alpha (weight of the label term on labeled photos) and temperature.
        schedule: Epochs, rate, callbacks, progress.

    Returns:
        The :func:`~.finetune.fit` report plus photos, labeled photos, alpha, temperature and teacher images run.
    """
    if cache.logits.shape[0] != len(photos.labels):
        raise ValueError(f"teacher cache holds {cache.logits.shape[0]} photos, the set has {len(photos.labels)}")
    alpha, temperature = distillation.alpha, distillation.temperature
    loss = DistillationLoss(photos.num_classes, student_activation, alpha, temperature)
    report = fit(student, cache.dataset(photos), loss, photos.steps_per_epoch(), schedule)
    return {
        **report,
        "photos": int(len(photos.labels)),
        "labeled_photos": photos.labeled_count,
        "alpha": alpha,
        "temperature": temperature,
        "teacher_views": len(VIEWS),
        "teacher_images_run": cache.images_run,
    }
