"""The one preprocessing function.

Calibration, evaluation and the runtime all turn an OpenCV BGR frame into a model input
through :func:`preprocess`, driven by the :class:`InputSpec` recorded in the bundle's
manifest. Two copies of this code would drift apart and silently cost accuracy, so there
is exactly one.

The float model input is ``(pixel - mean) / std`` per channel, with pixels in 0-255 in the
model's colour order. A quantized model's input tensor then takes
``round(x / scale + zero_point)`` (see :func:`quantize`).
"""

from __future__ import annotations

import cv2
import numpy as np

from .input_spec import ColorOrder, InputRange, InputSpec
from .profiles import ResizeMode

__all__ = [
    "ColorOrder",
    "InputRange",
    "InputSpec",
    "input_region",
    "model_input",
    "model_pixels",
    "preprocess",
    "quantize",
    "to_bgr",
]


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Bring a grayscale, BGR or BGRA uint8 frame to 3-channel BGR.

    Raises:
        ValueError: The array is not an image this SDK can use.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an OpenCV image (numpy array), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}; convert it with image.astype(np.uint8)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")


def input_region(spec: InputSpec, image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """The part of a frame the model sees, ``(left, top, right, bottom)`` in pixels.

    For runtimes that take a region of interest rather than a crop (MediaPipe's
    ``ImageProcessingOptions.region_of_interest``, normalised by the frame size), so they read
    what tillsight reads. A letterboxed input sees the whole frame (with padding).
    """
    left, top, width, height = 0, 0, image_width, image_height
    if spec.crop < 1.0:
        height, width = max(1, round(image_height * spec.crop)), max(1, round(image_width * spec.crop))
        top, left = (image_height - height) // 2, (image_width - width) // 2
    if spec.resize is ResizeMode.CENTER_CROP:
        crop_w = min(width, round(height * spec.width / spec.height))
        crop_h = min(height, round(width * spec.height / spec.width))
        top, left = top + (height - crop_h) // 2, left + (width - crop_w) // 2
        width, height = crop_w, crop_h
    return left, top, left + width, top + height


def _resize(image: np.ndarray, height: int, width: int, mode: ResizeMode, crop: float = 1.0) -> np.ndarray:
    src_h, src_w = image.shape[:2]
    if src_h == 0 or src_w == 0:
        raise ValueError("the image is empty (0 pixels)")
    if crop < 1.0:  # the central fraction of each side, whatever the mode does next
        keep_h, keep_w = max(1, round(src_h * crop)), max(1, round(src_w * crop))
        top, left = (src_h - keep_h) // 2, (src_w - keep_w) // 2
        image = image[top : top + keep_h, left : left + keep_w]
        src_h, src_w = keep_h, keep_w
    if mode is ResizeMode.CENTER_CROP:
        # The largest centred window with the target's aspect ratio, then a plain resize.
        crop_w = min(src_w, round(src_h * width / height))
        crop_h = min(src_h, round(src_w * height / width))
        top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
        image = image[top : top + crop_h, left : left + crop_w]
    elif mode is ResizeMode.LETTERBOX:
        ratio = min(height / src_h, width / src_w)
        inner_h, inner_w = max(1, round(src_h * ratio)), max(1, round(src_w * ratio))
        inner = cv2.resize(image, (inner_w, inner_h), interpolation=_interpolation(src_h, inner_h))
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        top, left = (height - inner_h) // 2, (width - inner_w) // 2
        canvas[top : top + inner_h, left : left + inner_w] = inner
        return canvas
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=_interpolation(image.shape[0], height))


def _interpolation(src: int, dst: int) -> int:
    return cv2.INTER_AREA if dst < src else cv2.INTER_LINEAR


def preprocess(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Turn an OpenCV frame into the float model input described by ``spec``.

    Args:
        image: uint8 BGR ``HxWx3`` array of any size (grayscale and BGRA are converted).
        spec: The model's input spec (from the manifest, or being built by a converter).

    Returns:
        float32 array of shape ``(spec.height, spec.width, 3)``: what the float Keras
        model takes. Use :func:`quantize` for an integer input tensor.

    Raises:
        ValueError: ``image`` is not a usable uint8 image.
    """
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return (model_pixels(image, spec).astype(np.float32) - mean) / std


def model_pixels(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The frame as uint8 pixels at the model's size and in its colour order: :func:`preprocess` before normalising.

    Training code keeps photos in this compact form and normalises batches itself with the
    spec's ``mean`` and ``std``, which gives exactly :func:`preprocess`'s values.
    """
    resized = _resize(to_bgr(image), spec.height, spec.width, spec.resize, spec.crop)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB) if spec.color_order is ColorOrder.RGB else resized


def quantize(values: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """Quantize float values to a model's integer input type.

    Args:
        values: Float input as produced by :func:`preprocess`.
        dtype: ``uint8``, ``int8`` or ``float32`` (returned unchanged).
        scale: Tensor quantization scale.
        zero_point: Tensor quantization zero point.

    Returns:
        ``round(values / scale + zero_point)`` clipped to the integer type's range.
    """
    if dtype == "float32":
        return values.astype(np.float32, copy=False)
    info = np.iinfo(np.dtype(dtype))
    quantized = np.round(values / np.float32(scale) + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def model_input(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """:func:`preprocess` then :func:`quantize`: the model's input tensor for one frame (no batch axis).

    When the quantization is the identity on 0-255 pixels (uint8, scale 1, zero point 0, no
    normalisation: models with their rescaling inside), the resized uint8 pixels already are
    the input and the float round trip is skipped. The result is the same either way.

    Raises:
        ValueError: ``image`` is not a usable uint8 image.
    """
    identity = (
        spec.dtype == "uint8"
        and spec.scale == 1.0
        and spec.zero_point == 0
        and tuple(spec.mean) == (0.0, 0.0, 0.0)
        and tuple(spec.std) == (1.0, 1.0, 1.0)
    )
    if not identity:
        return quantize(preprocess(image, spec), spec.dtype, spec.scale, spec.zero_point)
    return np.ascontiguousarray(model_pixels(image, spec))
