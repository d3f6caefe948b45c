"""Smaller architectures to distill a classifier into, for profiles whose budget the teacher misses.

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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tillsight.errors import ModelLoadError
from tillsight.preprocess import InputSpec

from .._tf import keras
from .batchnorm import batchnorm_layers

__all__ = ["PRETRAINED_STUDENTS", "STUDENTS", "build_student"]


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
