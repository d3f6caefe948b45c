"""A held-out check that training did not make a model agree less with its teacher.

Distillation and quantization-aware fine-tuning both start from a model that already works
(the teacher's weights, the compensated int8 rounding). Every :data:`HOLD_OUT_EVERY`-th
training photo is kept out of the training; if the trained model agrees with the teacher's
top-1 on those photos less often than the untrained one did, its starting weights are kept.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from tillsight.bundle_metrics import percent_equal

from .photos import TrainingPhotos

__all__ = ["HOLD_OUT_EVERY", "HOLD_OUT_MIN_PHOTOS", "HeldOutGuard", "held_out_indices", "top1_of"]

logger = logging.getLogger(__name__)

#: Of the training photos, every this-many-th one is held out (files sorted by class: a spread over the classes).
HOLD_OUT_EVERY = 10
#: ...when there are at least this many photos to hold out.
HOLD_OUT_MIN_PHOTOS = 16


def held_out_indices(count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(held out, kept)`` indices of ``count`` photos, or None when too few would be held out."""
    held = np.arange(0, count, HOLD_OUT_EVERY)
    if len(held) < HOLD_OUT_MIN_PHOTOS:
        return None
    return held, np.setdiff1d(np.arange(count), held)


def top1_of(model: Any, photos: TrainingPhotos) -> np.ndarray:
    """The model's top class of each photo, in batches of 64."""
    found = [
        np.argmax(np.asarray(model(photos.normalise(photos.pixels[i : i + 64]), training=False)), axis=-1)
        for i in range(0, len(photos.labels), 64)
    ]
    return np.concatenate(found)


@dataclasses.dataclass
class HeldOutGuard:
    """The teacher's top-1 on held-out photos, and the model's agreement with it before training.

    Build it with :meth:`before_training` on the untrained model, train, then call :meth:`settle`.
    """

    teacher_top1: np.ndarray
    photos: TrainingPhotos  # at the model's input size
    what: str  # names the training in the warning: "distillation", "quantization-aware fine-tuning"
    start_agreement: float
    start_weights: list[np.ndarray]

    @classmethod
    def before_training(cls, model: Any, photos: TrainingPhotos, teacher_top1: np.ndarray, what: str) -> HeldOutGuard:
        """Measure the untrained ``model`` on ``photos`` and keep its weights."""
        start = percent_equal(top1_of(model, photos), teacher_top1, 2)
        return cls(teacher_top1, photos, what, start, [np.array(w) for w in model.get_weights()])

    def agreement(self, model: Any) -> float:
        """Percent of the held-out photos on which ``model``'s top-1 is the teacher's."""
        return percent_equal(top1_of(model, self.photos), self.teacher_top1, 2)

    def settle(self, model: Any) -> dict[str, Any]:
        """Keep the trained model, or restore its starting weights if training lowered its held-out agreement."""
        end = self.agreement(model)
        kept_start = end < self.start_agreement
        if kept_start:
            model.set_weights(self.start_weights)
            logger.warning(
                "%s lowered the agreement with the teacher on %d held-out photos from %.2f%% to %.2f%%: keeping the "
                "starting weights (try a lower learning rate or more photos)",
                self.what,
                len(self.teacher_top1),
                self.start_agreement,
                end,
            )
        return {
            "guard_photos": int(len(self.teacher_top1)),
            "guard_agreement_start": self.start_agreement,
            "guard_agreement_end": end,
            "kept_start": kept_start,
        }
