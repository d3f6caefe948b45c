"""What a model takes as input, as the bundle's manifest records it: size, colour order, range, crop.

Reading a manifest needs this and nothing heavier: no OpenCV, no numpy. Turning frames into
inputs is :mod:`tillsight.preprocess`.
"""

from __future__ import annotations

import dataclasses
import enum

from .errors import OptionsError
from .profiles import ResizeMode, crop_problem

__all__ = ["ColorOrder", "InputRange", "InputSpec"]


class ColorOrder(str, enum.Enum):
    """Channel order the model was trained on."""

    RGB = "rgb"
    BGR = "bgr"


class InputRange(str, enum.Enum):
    """Common value ranges a Keras model may expect; each is a (mean, std) in pixel units."""

    PIXELS = "0-255"  # preprocessing (Rescaling) inside the model
    UNIT = "0-1"
    SYMMETRIC = "-1-1"  # MobileNet-style

    def mean_std(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """The (mean, std) in 0-255 pixel units that give this range."""
        mean, std = {
            InputRange.PIXELS: (0.0, 1.0),
            InputRange.UNIT: (0.0, 255.0),
            InputRange.SYMMETRIC: (127.5, 127.5),
        }[self]
        return (mean, mean, mean), (std, std, std)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Everything needed to turn a camera frame into this model's input tensor."""

    height: int
    width: int
    color_order: ColorOrder = ColorOrder.RGB
    resize: ResizeMode = ResizeMode.CENTER_CROP
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dtype: str = "float32"  # the model's input tensor type: uint8 | int8 | float32
    scale: float = 0.0  # quantization of the input tensor (0 for float inputs)
    zero_point: int = 0
    crop: float = 1.0  # central fraction of each side kept before resizing (0.875: the usual ImageNet eval crop)

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise OptionsError(f"input size must be positive, got {self.height}x{self.width}")
        if problem := crop_problem(self.crop):
            raise OptionsError(f"crop {problem}")
        if any(s == 0 for s in self.std):
            raise OptionsError(f"std must not be zero, got {self.std}")
        if self.dtype not in ("uint8", "int8", "float32"):
            raise OptionsError(f"input dtype must be uint8, int8 or float32, got {self.dtype}")
        if self.dtype != "float32" and self.scale <= 0:
            raise OptionsError(f"a {self.dtype} input needs a positive quantization scale")
