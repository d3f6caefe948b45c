"""What a conversion may assume about the source model's input, and what it may do.

Importing this module never imports TensorFlow: the CLI and kiosk apps build options on
the device side too.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from .errors import OptionsError
from .input_spec import ColorOrder, InputRange
from .profiles import DistillationOptions, Profile, PruningOptions, QatOptions, crop_problem, load_profile

__all__ = ["ConversionOptions"]


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
    """How the source model expects its input, and what the conversion may do."""

    color_order: ColorOrder = ColorOrder.RGB
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in 0-255 pixel units
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop: float | None = None  # central fraction of each side kept before resizing; None: the profile's
    allow_accuracy_drop: bool = False  # write the bundle even if the drop exceeds the tolerance
    allow_unsafe_model: bool = False  # load model files with Keras safe mode off
    progress: bool = False  # progress bars on stderr
    min_calibration_images: int | None = None  # the fewest usable calibration images accepted; None: the profile's
    sign_key: str | Path | None = None  # Ed25519 private key (PKCS#8 PEM): the bundle is signed before it is published
    seed: int = 0  # the training steps' random seed (shuffles, augmentation, dropout): same seed and data, same model
    # Each replaces the profile's whole table when set; build them with for_profile() to change one knob.
    pruning: PruningOptions | None = None  # the profile's [pruning] table
    distillation: DistillationOptions | None = None  # the profile's [distillation] table
    qat: QatOptions | None = None  # the profile's [qat] table

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise OptionsError("mean and std need 3 values each (one per channel)")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise OptionsError(f"mean and std must be finite numbers, got mean {self.mean} and std {self.std}")
        if any(s <= 0 for s in self.std):
            raise OptionsError(f"std values must be positive, got {self.std}")
        if self.crop is not None and (problem := crop_problem(self.crop)):
            raise OptionsError(f"crop {problem}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise OptionsError(f"the seed must be a whole number of 0 or more, got {self.seed!r}")
        if self.min_calibration_images is not None and self.min_calibration_images < 1:
            raise OptionsError(f"the calibration minimum must be at least 1 image, got {self.min_calibration_images}")

    @classmethod
    def from_input_range(cls, input_range: InputRange | str | None = InputRange.PIXELS, **kwargs: Any) -> ConversionOptions:
        """Options for a model expecting one of the common value ranges.

        Args:
            input_range: ``0-255`` (preprocessing inside the model), ``0-1`` or ``-1-1``; None: ``kwargs``' mean and std.
            **kwargs: Any other field of :class:`ConversionOptions`.

        Raises:
            OptionsError: Unknown range, or a range given with a mean and std.
        """
        return cls(**_with_input_range(input_range, kwargs))

    @classmethod
    def for_profile(
        cls,
        profile: str | Path | Profile,
        *,
        prune: str | None = None,
        finetune_epochs: int | None = None,
        distill: bool = False,
        qat: bool = False,
        qat_epochs: int | None = None,
        input_range: InputRange | str | None = None,
        **fields: Any,
    ) -> ConversionOptions:
        """Options whose training tables are the profile's own with these overrides applied.

        This is the one place where a profile and the ``convert`` flags of the same names meet.

        Args:
            profile: Shipped profile name, path to a profile TOML file, or a :class:`Profile`.
            prune: ``none``, ``channels:0.3``, ``unstructured:0.5`` or a bare fraction (the
                profile's mode), over the profile's other ``[pruning]`` settings.
            finetune_epochs: Fine-tuning epochs after pruning (0: prune in one shot).
            distill: Pruning's fine-tuning also learns from the original float model.
            qat: Quantization-aware fine-tuning before the int8 conversion.
            qat_epochs: Its epochs (with ``qat``); the profile's by default.
            input_range: The value range the model expects (``0-255``, ``0-1``, ``-1-1``), instead of a mean and std.
            **fields: Any other field of :class:`ConversionOptions`.

        Raises:
            OptionsError: A value is out of range, or ``qat_epochs`` is given without ``qat``.
            ProfileError: The profile is unknown or invalid.
        """
        if finetune_epochs is not None and finetune_epochs < 0:
            raise OptionsError(f"--finetune-epochs must be 0 or more, got {finetune_epochs}")
        if qat_epochs is not None and qat_epochs < 1:
            raise OptionsError(f"--qat-epochs must be at least 1, got {qat_epochs}")
        if qat_epochs is not None and not qat:
            raise OptionsError("--qat-epochs goes with --qat")
        resolved = load_profile(profile)
        overrides: dict[str, Any] = {}
        if prune is not None or finetune_epochs is not None:
            pruning = resolved.pruning
            if prune is not None:
                try:
                    pruning = PruningOptions.from_spec(prune, base=pruning)
                except OptionsError as exc:
                    raise OptionsError(f"--prune: {exc}") from None
            if finetune_epochs is not None:
                pruning = dataclasses.replace(pruning, finetune_epochs=finetune_epochs)
            overrides["pruning"] = pruning
        if distill:
            overrides["distillation"] = dataclasses.replace(resolved.distillation, enabled=True)
        if qat:
            overrides["qat"] = dataclasses.replace(resolved.qat, enabled=True, epochs=qat_epochs or resolved.qat.epochs)
        return cls(**overrides, **_with_input_range(input_range, fields))

    def apply_to(self, profile: Profile) -> Profile:
        """The profile with the tables these options replace."""
        tables: dict[str, Any] = {"pruning": self.pruning, "distillation": self.distillation, "qat": self.qat}
        profile = dataclasses.replace(profile, **{name: table for name, table in tables.items() if table is not None})
        if self.min_calibration_images is None:
            return profile
        quantization = dataclasses.replace(
            profile.quantization,
            min_calibration_images=self.min_calibration_images,
            calibration_images=max(profile.quantization.calibration_images, self.min_calibration_images),
        )
        return dataclasses.replace(profile, quantization=quantization)


def _with_input_range(input_range: InputRange | str | None, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the mean and std of ``input_range`` (None: as they are)."""
    if input_range is None:
        return fields
    if fields.get("mean") is not None or fields.get("std") is not None:
        raise OptionsError("give an input range or a mean and std, not both")
    try:
        mean, std = InputRange(input_range).mean_std()
    except ValueError:
        ranges = ", ".join(member.value for member in InputRange)
        raise OptionsError(f"input range '{input_range}' is none of {ranges}") from None
    return {**fields, "mean": mean, "std": std}
