"""Training on the converting machine: what wins back the accuracy compression costs.

* :mod:`.photos`: labeled and unlabeled photos decoded once, kept as uint8 at the model's input size.
* :mod:`.finetune`: the one training loop (Adam, cosine decay), and plain fine-tuning on labels.
* :mod:`.batchnorm`: BatchNorm statistics a trained model can train again with.
* :mod:`.distillation`: :func:`train_student` learns from a teacher's cached outputs, with or without labels.
* :mod:`.qat`: quantization-aware fine-tuning: the model computes as int8 TFLite will.
* :mod:`.students`: small architectures to distill into, how one starts and how it trains.

TensorFlow Model Optimization does the last three for Keras 2 only; these run on Keras 3.
"""

from __future__ import annotations

from .batchnorm import (
    STATISTICS_IMAGES,
    batchnorm_layers,
    frozen_batchnorm,
    rebase_statistics,
    rebased_statistics,
    reestimate_statistics,
)
from .distillation import TeacherCache, kd_loss, train_student
from .finetune import TrainingSchedule, fine_tune, fit, seeded
from .photos import UNLABELED, TrainingPhotos, load_training_photos
from .qat import QuantizationAwareModel, quantization_aware, quantization_aware_finetune

__all__ = [
    "STATISTICS_IMAGES",
    "UNLABELED",
    "QuantizationAwareModel",
    "TeacherCache",
    "TrainingPhotos",
    "TrainingSchedule",
    "batchnorm_layers",
    "fine_tune",
    "fit",
    "frozen_batchnorm",
    "kd_loss",
    "load_training_photos",
    "quantization_aware",
    "quantization_aware_finetune",
    "rebase_statistics",
    "rebased_statistics",
    "reestimate_statistics",
    "seeded",
    "train_student",
]
