"""Smaller architectures to distill a classifier into, for profiles whose budget the teacher misses:
how each is built (:func:`build_student`), how it starts (:func:`start_student`, from the teacher's
weights when it has the teacher's architecture) and how it trains (:func:`train_in_stages`).

A student takes the input the teacher takes (colour order, mean and std; the same size unless
a student size is asked for), so the same conversion flags work for both.

Pretrained students (:data:`PRETRAINED_STUDENTS`, EfficientNet-Lite with ImageNet weights from the
``pretrained`` extra) start from what ImageNet taught them, at any input size; their
normalisation layer is set to undo the teacher's, so they too take the teacher's input.

The from-scratch students (:data:`STUDENTS`) have no rescaling layer in front: their
first convolution is followed by BatchNormalization, which absorbs any input scale while
it trains from scratch, and an elementwise rescale in front costs int8 XNNPACK a large
share of a small model's time (at 96 px on the 2-core x86 host, 0.48 ms with a scalar
rescale, 0.77 ms per channel, against 0.39 ms without; one noisy run). Weights start from
scratch; the teacher supplies the knowledge.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.bundle import OutputActivation
from tillsight.conversion_options import ConversionOptions
from tillsight.errors import ModelLoadError
from tillsight.preprocess import InputSpec
from tillsight.profiles import DistillationOptions

from .._tf import keras
from ..source import PROBE_IMAGES, output_activation
from .batchnorm import STATISTICS_IMAGES, batchnorm_layers, rebase_statistics
from .distillation import TeacherCache, train_student
from .finetune import TrainingSchedule

__all__ = ["FROM_TEACHER_RATE_FACTOR", "PRETRAINED_STUDENTS", "STUDENTS", "build_student", "start_student", "train_in_stages"]

logger = logging.getLogger(__name__)


def _mobilenet_v2(shape: tuple[int, int, int]) -> Any:
    return keras.applications.MobileNetV2(input_shape=shape, alpha=0.35, include_top=False, weights=None, pooling="avg")


def _mobilenet_v3_small(shape: tuple[int, int, int]) -> Any:
    return keras.applications.MobileNetV3Small(
        input_shape=shape, include_top=False, weights=None, pooling="avg", include_preprocessing=False
    )


def _mobilenet_v3_small_minimal(shape: tuple[int, int, int]) -> Any:
    return keras.applications.MobileNetV3Small(
        input_shape=shape, include_top=False, weights=None, pooling="avg", include_preprocessing=False, minimalistic=True
    )


#: Student name -> backbone builder (input shape -> pooled-feature model).
#: The minimal MobileNetV3 drops hard-swish and squeeze-and-excitation, which int8 XNNPACK runs slowly:
#: at 96 px on this project's 2-core x86 host, 0.23 ms against 1.53 ms for the full MobileNetV3-Small.
STUDENTS: dict[str, Callable[[tuple[int, int, int]], Any]] = {
    "mobilenetv2-0.35": _mobilenet_v2,
    "mobilenetv3-small": _mobilenet_v3_small,
    "mobilenetv3-small-minimal": _mobilenet_v3_small_minimal,
}


#: Student name -> EfficientNet-Lite variant, built with ImageNet weights.
PRETRAINED_STUDENTS: dict[str, str] = {f"efficientnet-{variant}": variant for variant in ("lite0", "lite1", "lite2")}


def build_student(name_or_path: str | Path, spec: InputSpec, num_classes: int, allow_unsafe: bool = False) -> Any:
    """A student model for a teacher with input ``spec`` (its size) and ``num_classes`` softmax outputs.

    Args:
        name_or_path: A name from :data:`STUDENTS` or :data:`PRETRAINED_STUDENTS`, or a ``.keras`` file with the
            same input and outputs.
        spec: The student's input size, and the teacher's colour order and normalisation.
        num_classes: The teacher's outputs.
        allow_unsafe: Load a student file with Keras safe mode off.

    Raises:
        ModelLoadError: Unknown name, unreadable file, or a student whose outputs differ from the teacher's.
    """
    shape = (spec.height, spec.width, 3)
    if str(name_or_path) in PRETRAINED_STUDENTS:
        from tillsight.converters.backbones import efficientnet_lite

        model = efficientnet_lite(
            PRETRAINED_STUDENTS[str(name_or_path)],
            shape,
            num_classes,
            mean=spec.mean,
            std=spec.std,
            color_order=spec.color_order.value,
        )
        for layer in batchnorm_layers(model):  # BatchNorm keeps its ImageNet statistics (inference mode): a
            layer.trainable = False  # short training on few photos cannot re-estimate them, and batch statistics differ
        return model
    if str(name_or_path) in STUDENTS:
        inputs = keras.Input(shape, name="image")
        backbone = STUDENTS[str(name_or_path)](shape)
        for layer in backbone.layers:  # few thousand photos: moving statistics must settle within a short training
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        x = keras.layers.Dropout(0.2)(backbone(inputs))
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(x)
        return keras.Model(inputs, outputs, name=f"student_{name_or_path}".replace(".", "_").replace("-", "_"))
    path = Path(name_or_path)
    if path.suffix not in (".keras", ".h5"):
        names = ", ".join([*STUDENTS, *PRETRAINED_STUDENTS])
        raise ModelLoadError(f"student '{name_or_path}' is none of {names}, nor a .keras file")
    from tillsight.converters.source import load_source_model

    student = load_source_model(path, allow_unsafe=allow_unsafe)
    if student.keras_model is None:
        raise ModelLoadError(f"student {path} must be a .keras or .h5 file to be trained")
    if student.num_classes != num_classes:
        raise ModelLoadError(f"student {path} has {student.num_classes} outputs; the teacher has {num_classes}")
    if None not in student.input_size and tuple(student.input_size) != shape[:2]:
        raise ModelLoadError(f"student {path} takes {list(student.input_size)} images, not the {list(shape[:2])} asked for")
    return student.keras_model


#: A pretrained student's new classifier learns alone for this share of the epochs (at least one).
HEAD_EPOCH_SHARE = 0.25
#: Then the whole student trains at this fraction of the learning rate.
BACKBONE_RATE_FACTOR = 0.1
#: A student that starts from the teacher's weights trains at this fraction of the learning rate.
#: Measured with 4 epochs on the 2,640 train photos (EfficientNet-Lite0 at 160 px from the 224 px sample
#: teacher, 81.42%; val top-1 of the int8 student, seeds 0-2): 81.08% (79.73-81.76%) at 3e-4,
#: 79.05% (77.36-79.05%) at 1e-4, 76.35% (75.34-76.69%) at 1e-5. (An earlier screen, 1 epoch on 900
#: photos from a start at 78.04% float, had favoured 1e-5; today's start scores 75.34%.)
FROM_TEACHER_RATE_FACTOR = 0.3


def train_in_stages(
    model: Any,
    cache: TeacherCache,
    photos: Any,
    activation: OutputActivation,
    distillation: DistillationOptions,
    epochs: int,
    learning_rate: float,
    new_head: bool,
    progress: bool,
    rate_factor: float = 1.0,
) -> dict[str, Any]:
    """Distill into the student; a pretrained one with a new head learns the head first, then everything more gently.

    The head of a pretrained student starts random: trained together with the backbone at the full
    rate, its large early gradients wipe out what ImageNet taught the backbone. Measured on the
    sample (EfficientNet-Lite0 at 160 px from the 224 px teacher, 900 train photos, 1 epoch, val
    top-1): 0.0% at rate 1e-3, 7.1% at 1e-4; 3 epochs on all 2640 photos at 1e-3 reached 7.1%.
    """

    def run(run_epochs: int, rate: float, desc: str = "distill") -> dict[str, Any]:
        schedule = TrainingSchedule(run_epochs, rate, progress=progress, desc=desc)
        return train_student(model, cache, photos, activation, distillation, schedule)

    if not new_head or epochs < 2:
        return run(epochs, learning_rate * rate_factor)
    head = model.get_layer("scores")
    trainable = [(layer, layer.trainable) for layer in model.layers]
    head_epochs = max(1, round(HEAD_EPOCH_SHARE * epochs))
    for layer, _ in trainable:
        layer.trainable = layer is head
    try:
        first = run(head_epochs, learning_rate, "distill (head)")
    finally:
        for layer, was in trainable:
            layer.trainable = was
    rest = run(epochs - head_epochs, learning_rate * BACKBONE_RATE_FACTOR)
    return {
        **rest,
        "epochs": epochs,
        "head_epochs": head_epochs,
        "seconds": round(first["seconds"] + rest["seconds"], 1),
        "loss": first["loss"] + rest["loss"],
    }


def start_student(
    name: str | Path, spec: InputSpec, teacher: Any, photos: Any, options: ConversionOptions
) -> tuple[Any, bool, OutputActivation]:
    """The untrained student, whether it starts from the teacher's weights, and what it outputs."""
    model = build_student(name, spec, teacher.num_classes, options.allow_unsafe_model)
    from_teacher = start_from_teacher(model, teacher.keras_model)
    if from_teacher:  # the teacher's statistics may not be its photos' (BatchNorm frozen in its fine-tuning)
        rebase_statistics(model, photos.sample(STATISTICS_IMAGES))
    probe = np.asarray(photos.normalise(photos.pixels[:PROBE_IMAGES]))
    return model, from_teacher, output_activation(_Probe(model), probe)


def start_from_teacher(student: Any, teacher: Any) -> bool:
    """Copy the teacher's weights into a student of the same architecture (another input size); True if copied.

    Every student weight needs a teacher weight with the same name and shape (convolution and
    dense weights do not depend on the input size), so the student starts as the teacher at its
    own size instead of from ImageNet with a random head.
    """
    teacher_weights = {weight.path: weight for weight in teacher.weights}
    pairs = [(weight, teacher_weights.get(weight.path)) for weight in student.weights]
    if not pairs or any(match is None or tuple(match.shape) != tuple(weight.shape) for weight, match in pairs):
        return False
    for weight, match in pairs:
        weight.assign(match.numpy())
    logger.info("the student has the teacher's architecture: it starts from the teacher's weights")
    return True


@dataclasses.dataclass(frozen=True)
class _Probe:
    """The ``predict`` that :func:`output_activation` needs, over a bare Keras model."""

    model: Any

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(images, training=False))
