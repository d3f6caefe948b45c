"""Error-compensated int8 weight rounding for the TFLite converter (GPTQ, Frantar et al. 2022).

The TFLite converter rounds every weight to the nearest point of its int8 grid (per output
channel, step ``max|w| / 127``). On a fine-tuned pretrained classifier those independent
roundings add up: on the 81-product EfficientNet-Lite0 sample, int8 weights alone (float
activations) changed 4.4% of the held-out predictions.

This module chooses the roundings instead, layer by layer in graph order. Each input column of
a layer's kernel is rounded in turn and its rounding error is spread over the columns not yet
rounded, weighted by the inverse of the layer's input second moments ``X Xᵀ`` measured on
calibration images, so that the layer's outputs on those images move as little as possible.
Those inputs come from the model with every earlier layer already rounded, and before its own
rounding each layer is refit by least squares to the float layer's outputs
(:mod:`.least_squares`), so the roundings upstream are paid for where they land instead of
adding up. On a re-trained sample (81.76% float), that took agreement with float from 97.30%
to 98.99%, the medians of three draws of 128 calibration images; the same steps with the input
moments summed in another order gave 98.31%, so a draw moves by 2 to 4 photos of 296 with float
round-off alone (``bench/ANALYSIS.md``). The
chosen values are written back as float weights that lie exactly on the grid the converter
will compute (each channel keeps its largest weight, so the converter finds the same step),
and the converter's own rounding then keeps them.

Compensated: ``Conv2D`` (one group, no dilation, channels last), ``DepthwiseConv2D``
(multiplier 1) and ``Dense``, in nested models too. A ``BatchNormalization`` right after a
linear convolution is folded into its kernel by the converter, so the grid is computed on the
folded kernel. Any other layer keeps the converter's nearest rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator

import numpy as np

from tillsight.errors import summarize

from ._tf import keras
from .layer_inputs import LayerInputs, walk, walkable
from .least_squares import LinearLayer, too_few_samples

__all__ = [
    "NNCF_INT8",
    "NNCF_INT8_OVERFLOW_FIX",
    "TFLITE_INT8",
    "RoundingReport",
    "WeightGrid",
    "compensated_weights",
    "inverse_cholesky",
]

logger = logging.getLogger(__name__)

MAX_IMAGES = 128  # calibration images whose layer inputs are measured (GPTQ's usual count)
_MAX_COLUMNS = 8192  # a kernel with more inputs than this keeps nearest rounding (its X Xᵀ would not fit)
_DAMPING = 0.01  # of the mean diagonal, added to X Xᵀ: keeps the inverse stable on few images
_BLOCK = 128  # columns rounded before the rest of the kernel is updated


@dataclasses.dataclass(frozen=True)
class WeightGrid:
    """Where a converter puts a channel's weights: ``step = max|w| / peak``, integers in ``[low, high]``."""

    peak: float  # steps from zero to the channel's largest weight, which keeps its value
    low: int  # the chosen integers; within the peak, so no other weight outgrows the kept one
    high: int


#: Symmetric int8 with a narrow range, as the TFLite converter stores weights.
TFLITE_INT8 = WeightGrid(127.0, -127, 127)
#: NNCF's int8 weights with its overflow fix: 7 bits, scale ``max|w| / 63.5``. Chosen integers stay within ±63:
#: a 64 would outgrow the kept largest weight (63.5 steps) and NNCF would take another scale for the channel.
NNCF_INT8_OVERFLOW_FIX = WeightGrid(63.5, -63, 63)
#: NNCF's int8 weights without the overflow fix: TFLite's grid.
NNCF_INT8 = TFLITE_INT8


@dataclasses.dataclass(frozen=True)
class RoundingReport:
    """What :func:`compensated_weights` did."""

    layers: int  # kernels rounded with error compensation
    skipped: tuple[str, ...]  # weight layers left to the converter's nearest rounding
    refitted: int  # of the rounded kernels, those first refit to the float model's outputs
    images: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """For the bundle manifest's quantization record."""
        return {
            "method": "gptq",
            "layers": self.layers,
            "skipped_layers": len(self.skipped),
            "refit_layers": self.refitted,
            "images": self.images,
            "seconds": self.seconds,
        }


@dataclasses.dataclass
class _Target:
    layer: keras.layers.Layer
    fold: np.ndarray | None  # per-output-channel factor of a BatchNormalization the converter folds in
    hessian: np.ndarray | None = None  # X Xᵀ: [C, C], or [channels, k, k] for a depthwise kernel


@contextlib.contextmanager
def compensated_weights(
    model: keras.Model, images: np.ndarray, per_channel: bool, grid: WeightGrid = TFLITE_INT8
) -> Iterator[RoundingReport]:
    """Give ``model`` int8-grid weights with compensated rounding; restore the originals on exit.

    Layers are rounded in graph order (:func:`..layer_inputs.walk`), each on the inputs the model
    with its earlier layers already rounded feeds it. Before it is rounded, a layer is refit by least
    squares (:func:`..least_squares.refit`) so that its outputs on those inputs match the float
    model's outputs of the same layer: what the roundings upstream changed is won back where it can
    be. The refit is skipped where the images give too few samples for the layer's inputs (a classifier
    on pooled features) and in kernels with exact zeros, which it would fill; those are rounded as
    they are, zeros kept. Pretrained kernels hold a few exact zeros too (41 of the sample
    EfficientNet-Lite0's 50), so only 8 of its layers are refit; refitting all 49 that have samples
    enough scored lower on one draw (``bench/ANALYSIS.md``).

    Args:
        model: The float Keras model the converter is about to export (changed in place).
        images: Preprocessed calibration inputs; the first :data:`MAX_IMAGES` are used.
        per_channel: The converter's grid: one step per output channel, or one per kernel.
        grid: The converter's integers and where a channel's largest weight lands on them.

    Yields:
        What was rounded.
    """
    started = time.perf_counter()
    images = images[:MAX_IMAGES]
    rounded = [layer for layer in model._flatten_layers(include_self=False, recursive=True) if _has_kernel(layer)]  # noqa: SLF001
    targets = {id(layer): target for layer in rounded if (target := _target(layer)) is not None}
    originals = [(variable, variable.numpy()) for variable in model.weights]  # kernels, biases, BatchNorm means
    visited: set[int] = set()
    refitted = 0

    def visit(found: LayerInputs) -> None:
        nonlocal refitted
        target = targets[id(found.layer)]  # walk visits only targets
        visited.add(id(found.layer))
        moments = found.moments()
        view = LinearLayer.of(found.layer)
        if found.reference is not None and not too_few_samples(moments, view) and np.all(view.rows() != 0):
            view.set_augmented(view.refit_to(LinearLayer.of(found.reference), moments), view.has_bias)
            refitted += 1
        target.hessian = moments.inputs
        found.layer.kernel.assign(_round_kernel(target, per_channel, grid).astype(np.float32))

    try:
        if targets and walkable(model):  # a subclassed model has no graph to walk: the converter's nearest rounding
            walk(model, images, visit, lambda layer: id(layer) in targets, reference=_float_twin(model))
        skipped = tuple(layer.name for layer in rounded if id(layer) not in visited)
        report = RoundingReport(len(visited), skipped, refitted, len(images), round(time.perf_counter() - started, 1))
        logger.info(
            "weight rounding: %d kernels error-compensated (%d refit to the float model's outputs first) on %d images "
            "in %.1f s (%d left to nearest rounding)",
            report.layers,
            report.refitted,
            report.images,
            report.seconds,
            len(skipped),
        )
        yield report
    finally:
        for variable, value in originals:
            variable.assign(value)


def _float_twin(model: keras.Model) -> keras.Model | None:
    """A copy of the float model whose layer outputs the rounded layers are refit to; None where Keras cannot copy it."""
    try:
        twin = keras.models.clone_model(model, recursive=True)
        twin.set_weights(model.get_weights())
    except Exception as exc:  # a custom layer without a config: round without the refits
        logger.info("weight rounding without refits: the model cannot be copied (%s)", summarize(exc))
        return None
    return twin


def _has_kernel(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)) and layer.built


def _target(layer: keras.layers.Layer) -> _Target | None:
    """The layer as a rounding target, or None where the converter's kernel cannot be predicted."""
    if len(layer._inbound_nodes) != 1 or getattr(layer, "lora_enabled", False):
        return None
    if type(layer) not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense):
        return None  # Conv2DTranspose, quantization-aware layers (already trained for nearest rounding)...
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1):
            return None
        if isinstance(layer, keras.layers.Conv2D) and layer.groups != 1:
            return None
        if isinstance(layer, keras.layers.DepthwiseConv2D) and layer.depth_multiplier != 1:
            return None
    elif len(layer.kernel.shape) != 2:
        return None
    columns = int(np.prod(layer.kernel.shape[:-1])) if not isinstance(layer, keras.layers.DepthwiseConv2D) else 0
    if columns > _MAX_COLUMNS:
        return None
    consumers = [node.operation for node in layer._outbound_nodes]
    folded = len(consumers) == 1 and isinstance(consumers[0], keras.layers.BatchNormalization)
    if folded and isinstance(layer, keras.layers.Dense):
        return None  # whether the converter folds it is not pinned down: leave the kernel alone
    if folded and (layer.activation is not keras.activations.linear or consumers[0].axis not in (-1, 3)):
        folded = False  # the converter cannot fold through an activation or across another axis
    return _Target(layer, _bn_factor(consumers[0]) if folded else None)


def _bn_factor(bn: keras.layers.BatchNormalization) -> np.ndarray:
    gamma = bn.gamma.numpy() if bn.gamma is not None else 1.0
    return (gamma / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)).astype(np.float64)


def _round_kernel(target: _Target, per_channel: bool, grid: WeightGrid) -> np.ndarray:
    """The layer's kernel, its folded values on the converter's grid, chosen by GPTQ."""
    kernel = target.layer.kernel.numpy().astype(np.float64)
    fold = target.fold if target.fold is not None else np.ones(kernel.shape[-2 if _depthwise(target) else -1])
    if _depthwise(target):
        kh, kw, channels, _ = kernel.shape
        rows = (kernel[..., 0] * fold).reshape(kh * kw, channels).T  # [channel, kh*kw]
    else:
        rows = (kernel * fold).reshape(-1, kernel.shape[-1]).T  # [out, in]
    peak = np.abs(rows).max(axis=1)
    if not per_channel:
        peak = np.full_like(peak, peak.max())
    step = np.where(peak > 0, peak / grid.peak, 1.0)
    rounded = _gptq(rows, target.hessian, step, per_channel, grid)
    if _depthwise(target):
        return (rounded.T.reshape(kh, kw, channels) / fold)[..., np.newaxis]
    return (rounded.T / fold).reshape(kernel.shape)


def _depthwise(target: _Target) -> bool:
    return isinstance(target.layer, keras.layers.DepthwiseConv2D)


def _gptq(
    rows: np.ndarray, hessian: np.ndarray, step: np.ndarray, per_channel: bool, grid: WeightGrid = TFLITE_INT8
) -> np.ndarray:
    """Round ``rows`` [R, C] to multiples of ``step`` [R], column by column with error feedback.

    ``hessian`` is X Xᵀ, shared [C, C] or one per row [R, C, C]. The largest weight of each
    row (of the whole kernel when one step is shared) is pinned to ±grid.peak steps, so the
    converter's max-based step comes out the same. Weights that are exactly zero (pruned)
    stay zero, as SparseGPT quantizes a pruned layer: without that, the error fed forward
    from earlier columns fills the zeros and the int8 file loses its sparsity.
    """
    work = rows.copy()
    rounded = np.zeros_like(rows)
    pinned_column = np.abs(rows).argmax(axis=1)
    if not per_channel:  # one step for the kernel: only the row holding the kernel's peak is pinned
        peak_row = np.abs(rows).max(axis=1).argmax()
        pinned_column = np.where(np.arange(len(rows)) == peak_row, pinned_column, -1)
    pinned_value = np.sign(rows[np.arange(len(rows)), np.maximum(pinned_column, 0)]) * grid.peak * step
    pruned = rows == 0.0  # a pruned weight stays zero: its share of the error goes to the columns after it
    upper = inverse_cholesky(hessian)

    def round_column(column: int, values: np.ndarray) -> np.ndarray:
        chosen = np.clip(np.round(values / step), grid.low, grid.high) * step
        chosen = np.where(pinned_column == column, pinned_value, np.where(pruned[:, column], 0.0, chosen))
        rounded[:, column] = chosen
        return values - chosen

    if upper.ndim == 3:  # one small X Xᵀ per row (depthwise): column by column
        for column in range(rows.shape[1]):
            error = round_column(column, work[:, column]) / upper[:, column, column]
            work[:, column + 1 :] -= error[:, np.newaxis] * upper[:, column, column + 1 :]
        return rounded
    # shared X Xᵀ: blocks of columns, the columns after a block updated once by a matrix product
    for start in range(0, rows.shape[1], _BLOCK):
        stop = min(start + _BLOCK, rows.shape[1])
        block = work[:, start:stop].copy()
        errors = np.zeros_like(block)
        for offset in range(stop - start):
            column = start + offset
            errors[:, offset] = round_column(column, block[:, offset]) / upper[column, column]
            block[:, offset + 1 :] -= np.outer(errors[:, offset], upper[column, column + 1 : stop])
        work[:, stop:] -= errors @ upper[start:stop, stop:]
    return rounded


def inverse_cholesky(hessian: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of the damped inverse of X Xᵀ (batched over a leading axis)."""
    damped = hessian.copy()
    diagonal = np.diagonal(damped, axis1=-2, axis2=-1)
    index = np.arange(damped.shape[-1])
    # an input never seen non-zero gets weight 1, so its column rounds to nearest without harm
    damped[..., index, index] += _DAMPING * diagonal.mean(axis=-1, keepdims=True) + (diagonal == 0)
    return np.linalg.cholesky(np.linalg.inv(damped)).swapaxes(-1, -2)
