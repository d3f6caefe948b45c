"""The tables a device profile is made of: enums and frozen option dataclasses, one per TOML table.

:mod:`tillsight.profiles` reads a TOML file into these (and re-exports them); conversion options
and the CLI build them too. Each dataclass checks only what needs no other table.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Literal

import msgspec

from .errors import OptionsError

#: What a profile's numbers are: TOML has no unsigned type, and no knob takes a negative value.
Count = Annotated[int, msgspec.Meta(ge=0)]
Amount = Annotated[float, msgspec.Meta(ge=0)]

__all__ = [
    "BackendKind",
    "ResizeMode",
    "IODtype",
    "SizePolicy",
    "PruningMode",
    "PruningScope",
    "ChannelCriterion",
    "crop_problem",
    "InputPolicy",
    "WeightRounding",
    "QuantizationOptions",
    "FINETUNE_EPOCHS",
    "default_finetune_epochs",
    "PruningOptions",
    "DistillationOptions",
    "QatOptions",
    "Budgets",
    "Precision",
    "PerformanceHint",
    "OpenVINOOptions",
    "EdgeTPUOptions",
]


class BackendKind(str, enum.Enum):
    """Runtime backend a bundle is built for."""

    TFLITE = "tflite"
    EDGETPU = "edgetpu"
    OPENVINO = "openvino"


class ResizeMode(str, enum.Enum):
    """How a frame of any size is brought to the model's input size."""

    CENTER_CROP = "center-crop"
    STRETCH = "stretch"
    LETTERBOX = "letterbox"


class IODtype(str, enum.Enum):
    """Integer type of the quantized model's input and output tensors."""

    UINT8 = "uint8"
    INT8 = "int8"


class SizePolicy(str, enum.Enum):
    """Where the model input size comes from."""

    MODEL = "model"  # the model's own static size; the profile's size if it is dynamic
    PROFILE = "profile"  # always the profile's size (the model must accept it)


class PruningMode(str, enum.Enum):
    """Kind of pruning applied before quantization."""

    NONE = "none"
    UNSTRUCTURED = "unstructured"
    CHANNELS = "channels"


class PruningScope(str, enum.Enum):
    """How pruning shares out the fraction to remove among the layers."""

    LAYER = "layer"  # every prunable channel group (or layer, unstructured) loses the same fraction
    GLOBAL = "global"  # channels only: the weakest channels of the whole model go, wherever they are
    MEASURED = "measured"  # as much as "layer" removes, taken where trials on calibration images hurt least


class ChannelCriterion(str, enum.Enum):
    """How channel pruning ranks channels (the lowest go)."""

    RECONSTRUCTION = "reconstruction"  # least missed once the next layers are refit on calibration images (L1 without)
    L1 = "l1"  # L1 norm of each filter, normalised per layer
    BN_GAMMA = "bn-gamma"  # |gamma| of the BatchNorm on the channel (L1 where there is none)


def crop_problem(crop: float) -> str | None:
    """What is wrong with a centre crop fraction (the one check for profiles, options and input specs), or None."""
    return None if 0.0 < crop <= 1.0 else f"must be a fraction in (0, 1], got {crop}"


@dataclasses.dataclass(frozen=True)
class InputPolicy:
    """How camera frames become model inputs on this device."""

    size_policy: SizePolicy = SizePolicy.MODEL
    size: tuple[Count, Count] = (224, 224)  # (height, width)
    resize: ResizeMode = ResizeMode.CENTER_CROP
    crop: Amount = 1.0  # central fraction of each frame side kept before resizing (the model's training crop)
    io_dtype: IODtype = IODtype.UINT8


class WeightRounding(str, enum.Enum):
    """How the TFLite targets round float weights to int8."""

    COMPENSATED = "compensated"  # GPTQ: each rounding error spread over the weights not yet rounded (Keras models)
    NEAREST = "nearest"  # the converter's own round-to-nearest


@dataclasses.dataclass(frozen=True)
class QuantizationOptions:
    """Full-integer quantization settings."""

    per_channel: bool = True
    weight_rounding: WeightRounding = WeightRounding.COMPENSATED
    calibration_images: Count = 300
    min_calibration_images: Count = 100


#: Fine-tuning epochs after pruning when neither the profile nor the options say. Measured on the 81.42%
#: sample (seed 0, distilled, lr 5e-4): channels:0.3 kept 76.35% after 2 epochs, 79.39% after 8 (about
#: 65 s an epoch on 2 cores); the compensated one-shot unstructured 50% kept 77.36% with none and
#: 75.68% after 1 epoch: its zeros are chosen and paid for on the images, and the training photos
#: (which the model was fitted to) pull it away from the original's outputs.
FINETUNE_EPOCHS: dict[PruningMode, int] = {PruningMode.CHANNELS: 8, PruningMode.UNSTRUCTURED: 0}

#: Channel pruning past 30% trains this many more epochs for each further tenth of the channels removed
#: (16 at 0.5). channels:0.5 on the sample (distilled, seeds 0-2): int8 77.70% (74.32-78.38%) after 16
#: epochs against 72.64% (71.62-72.97%) after 8; the smaller model makes each epoch cheaper (10 minutes).
EXTRA_EPOCHS_PER_TENTH = 4


def default_finetune_epochs(mode: PruningMode, fraction: float) -> int:
    """The fine-tuning epochs a pruning mode takes by default at ``fraction`` (:data:`FINETUNE_EPOCHS`)."""
    epochs = FINETUNE_EPOCHS.get(mode, 0)
    if mode is PruningMode.CHANNELS and fraction > 0.3:
        epochs += round((fraction - 0.3) * 10 * EXTRA_EPOCHS_PER_TENTH)
    return epochs


@dataclasses.dataclass(frozen=True)
class PruningOptions:
    """Pruning before quantization, with fine-tuning on labeled photos to recover accuracy.

    Pruning runs when ``mode`` is not ``none`` and ``target`` is above 0.
    """

    mode: PruningMode = PruningMode.NONE
    fraction: Amount = 0.0  # of the weights zeroed (unstructured) or of the channels removed (channels)
    scope: PruningScope = PruningScope.MEASURED  # where the cuts go: measured on calibration images, or the same share
    criterion: ChannelCriterion = ChannelCriterion.RECONSTRUCTION  # channels only
    channel_multiple: Count = 8  # channels only: kept counts rounded to this (SIMD width, accelerator tiles)
    finetune_epochs: Count | None = None  # 0: prune in one shot, no fine-tuning data needed; None: the mode's own
    learning_rate: Amount = 0.0005  # Adam, cosine-decayed over the fine-tuning

    @property
    def epochs(self) -> int:
        """Fine-tuning epochs after pruning: ``finetune_epochs``, else the mode's own (:func:`default_finetune_epochs`)."""
        return self.finetune_epochs if self.finetune_epochs is not None else default_finetune_epochs(self.mode, self.fraction)

    @property
    def enabled(self) -> bool:
        """Whether this conversion prunes at all."""
        return self.mode is not PruningMode.NONE and self.fraction > 0.0

    @classmethod
    def from_spec(cls, spec: str, base: PruningOptions | None = None) -> PruningOptions:
        """Parse ``none``, ``unstructured:0.5``, ``channels:0.3`` or a bare fraction (``base``'s mode) over ``base``.

        Raises:
            OptionsError: Not one of those forms, or a fraction outside (0, 1).
        """
        base = base or cls()
        mode_text, _, fraction_text = spec.strip().rpartition(":") if ":" in spec else ("", "", spec.strip())
        try:
            if not mode_text and fraction_text.lower() == "none":
                mode, fraction = PruningMode.NONE, 0.0
            else:
                mode = PruningMode(mode_text.strip().lower()) if mode_text else base.mode
                fraction = float(fraction_text)
        except ValueError:
            raise OptionsError(f"'{spec}' is not a pruning setting: use none, unstructured:0.5 or channels:0.3") from None
        if mode is PruningMode.NONE and fraction > 0:
            raise OptionsError(
                f"'{spec}' gives no pruning mode and the profile has none: use channels:{fraction:g} or unstructured:{fraction:g}"
            )
        if mode is not PruningMode.NONE and not 0.0 < fraction < 1.0:
            raise OptionsError(f"pruning fraction in '{spec}' must be between 0 and 1 (exclusive), e.g. channels:0.3")
        return dataclasses.replace(base, mode=mode, fraction=fraction if mode is not PruningMode.NONE else 0.0)


@dataclasses.dataclass(frozen=True)
class DistillationOptions:
    """Knowledge distillation from the original float model whenever the conversion fine-tunes.

    The loss is ``alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``; photos
    without labels get the second term alone, so unlabeled store frames are enough.
    """

    enabled: bool = False  # pruning's fine-tuning learns from the original model too (QAT always does)
    alpha: Amount = 0.5  # weight of the label loss on labeled photos
    temperature: Amount = 4.0  # softening of teacher and student outputs

    def problem(self) -> str | None:
        """What is wrong with these settings, or None."""
        if not 0.0 <= self.alpha <= 1.0:
            return f"'distillation.alpha' must be in [0, 1], got {self.alpha}"
        if self.temperature <= 0.0:
            return f"'distillation.temperature' must be positive, got {self.temperature}"
        return None


@dataclasses.dataclass(frozen=True)
class QatOptions:
    """Quantization-aware fine-tuning before the int8 conversion (TFLite and Edge TPU profiles).

    The model fine-tunes as it will compute in int8 (fake-quantized weights and
    activations), learning to reproduce the original float model's outputs (labels are
    not used, so unlabeled photos are enough); the converter then takes the learned
    activation ranges. Use it when post-training int8 misses ``max_top1_drop``.
    """

    enabled: bool = False
    epochs: Count = 2
    learning_rate: Amount = 0.00005  # Adam, cosine-decayed; small: the model only has to absorb the rounding


@dataclasses.dataclass(frozen=True)
class Budgets:
    """What the device can afford; 0 means no limit."""

    max_model_bytes: Count = 0
    max_memory_bytes: Count = 0
    max_latency_ms: Amount = 0.0


class Precision(str, enum.Enum):
    """Numeric precision of an OpenVINO IR."""

    INT8 = "int8"  # NNCF post-training quantization: fastest where the device has int8 units
    FP16 = "fp16"  # FP16 weights: accuracy first, for iGPUs without int8 acceleration


class PerformanceHint(str, enum.Enum):
    """OpenVINO PERFORMANCE_HINT: one frame at a time, or many frames in flight."""

    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"


@dataclasses.dataclass(frozen=True)
class OpenVINOOptions:
    """Knobs of the OpenVINO backend (read only by profiles whose backend is openvino)."""

    precision: Precision = Precision.INT8
    device_fallbacks: tuple[str, ...] = ()  # e.g. ["CPU"]: used, with a warning, when `device` is absent
    performance_hint: PerformanceHint = PerformanceHint.LATENCY
    accuracy_control: bool = False  # INT8 with nncf.quantize_with_accuracy_control (needs --eval)
    # INT8 weights: 7 bits (NNCF's overflow fix) run in int8 on every CPU; 8 bits are as fine as TFLite's but would
    # overflow the int8 kernels of CPUs without VNNI (AVX2 or older), where the runtime runs them in f32 instead.
    int8_weight_bits: Literal[7, 8] = 7


@dataclasses.dataclass(frozen=True)
class EdgeTPUOptions:
    """Knobs of the Edge TPU target (read only by profiles whose backend is edgetpu)."""

    require_full_mapping: bool = False  # fail conversion when an op would run on the CPU
