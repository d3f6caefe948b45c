"""Least squares on calibration moments: a weight layer's kernel as rows, and a refit of those rows.

Every step that changes weights from calibration images (least-squares reconstruction after
pruning, one-shot sparsity, compensated int8 rounding) sees a ``Conv2D``, ``DepthwiseConv2D`` or
``Dense`` layer the same way: one row of weights per output over the columns of its input patches,
with the bias as a last column on a constant input. Refitting those rows so that, on calibration
images, the layer's outputs from the changed model's inputs match the original layer's outputs
from the original inputs (He et al. 2017, ThiNet; the least squares GPTQ and SparseGPT solve)
minimises ``‖Ŵ X − W X_ref‖² + λ‖Ŵ − W₀‖²``:

    Ŵ = (W · X_ref Xᵀ + λ W₀) (X Xᵀ + λ I)⁻¹

with ``W₀`` the starting weights, so a direction the images never explore keeps its weights.
A constant input column carries the bias, so mean shifts are refit too; a layer without a bias
whose output goes only to a BatchNorm gets it through that BatchNorm's moving mean, as the
converter folds it. A layer with fewer calibration samples than twice its inputs (a classifier
reading 1,280 pooled features gets one sample per image) has a rank-deficient ``X Xᵀ``: a refit
would fit those images rather than the layer. :func:`too_few_samples` says so; one-shot sparsity
and the int8 rounding leave such a layer unrefit (channel pruning's reconstruction still refits it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._tf import keras
from .layer_inputs import Moments

__all__ = ["DAMPING", "MIN_SAMPLES_PER_COLUMN", "LinearLayer", "augmented", "refit", "too_few_samples"]

layers = keras.layers

#: Ridge toward the starting weights, as a share of the mean diagonal of X Xᵀ.
DAMPING = 0.001


@dataclasses.dataclass
class LinearLayer:
    """A Conv2D, DepthwiseConv2D or Dense layer's kernel as rows ``[outputs, columns]`` and where its bias lives.

    Depthwise kernels are ``[channels, kh * kw]``: one row per channel, each with its own inputs.
    The bias is the layer's own, or, for a layer without one whose output feeds only a BatchNorm,
    minus that BatchNorm's moving mean (the converter folds both the same way); None: it has none.
    """

    layer: Any
    batchnorm: Any | None  # the BatchNorm that carries the bias of a layer without one

    @classmethod
    def of(cls, layer: Any) -> LinearLayer:
        batchnorm = None
        if not layer.use_bias and layer.activation is keras.activations.linear:
            consumers = [node.operation for node in layer._outbound_nodes]  # noqa: SLF001
            if len(consumers) == 1 and isinstance(consumers[0], layers.BatchNormalization) and consumers[0].axis in (-1, 3):
                batchnorm = consumers[0]
        return cls(layer, batchnorm)

    @property
    def depthwise(self) -> bool:
        return isinstance(self.layer, layers.DepthwiseConv2D)

    @property
    def has_bias(self) -> bool:
        return self.layer.use_bias or self.batchnorm is not None

    def rows(self) -> np.ndarray:
        kernel = np.asarray(self.layer.kernel.numpy(), np.float64)
        if self.depthwise:
            return kernel[..., 0].reshape(-1, kernel.shape[-2]).T
        return kernel.reshape(-1, kernel.shape[-1]).T

    def bias(self) -> np.ndarray:
        if self.layer.use_bias:
            return np.asarray(self.layer.bias.numpy(), np.float64)
        if self.batchnorm is not None:
            return -np.asarray(self.batchnorm.moving_mean.numpy(), np.float64)
        return np.zeros(self.rows().shape[0])

    def augmented_rows(self, with_bias: bool) -> np.ndarray:
        """The rows with the bias as a last column (the constant input's weights) when ``with_bias``."""
        rows = self.rows()
        return np.hstack([rows, self.bias()[:, None]]) if with_bias else rows

    def set_augmented(self, rows: np.ndarray, with_bias: bool) -> None:
        """Write back rows laid out as :meth:`augmented_rows` gives them."""
        self.set(rows[:, :-1] if with_bias else rows, rows[:, -1] if with_bias else None)

    def refit_to(self, reference: LinearLayer, moments: Moments, kept: np.ndarray | None = None) -> np.ndarray:
        """The layer's rows (bias last where it has one) refit so its outputs match the reference layer's; not written back.

        Args:
            reference: The same layer in the original model, whose outputs on the images are the target.
            moments: The layer's input moments with the cross moments against the reference's inputs.
            kept: The reference's output channels this layer kept (None: all of them).
        """
        with_bias = self.has_bias
        inputs, cross = augmented(moments, with_bias)
        target = reference.augmented_rows(with_bias)
        return refit(self.augmented_rows(with_bias), target if kept is None else target[kept], inputs, cross, bias=with_bias)

    def set(self, rows: np.ndarray, bias: np.ndarray | None) -> None:
        """Write rows (and the bias, where it lives) back into the layer."""
        shape = tuple(self.layer.kernel.shape)
        if self.depthwise:
            kernel = rows.T.reshape(shape[:-1])[..., np.newaxis]
        else:
            kernel = rows.T.reshape(shape)
        self.layer.kernel.assign(kernel.astype(np.float32))
        if bias is None:
            return
        if self.layer.use_bias:
            self.layer.bias.assign(bias.astype(np.float32))
        elif self.batchnorm is not None:
            self.batchnorm.moving_mean.assign((-bias).astype(np.float32))


def augmented(moments: Moments, with_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``X Xᵀ`` and ``X_ref Xᵀ`` with a constant input appended as the last column when the layer has a bias.

    Works on one system ``[C, C]`` or on one per depthwise channel ``[channels, k, k]``.
    """
    if not with_bias:
        return moments.inputs, moments.cross
    inputs = _bordered(moments.inputs, moments.sums, moments.sums, moments.count)
    cross = None
    if moments.cross is not None:
        cross = _bordered(moments.cross, moments.ref_sums, moments.sums, moments.count)
    return inputs, cross


def _bordered(block: np.ndarray, column: np.ndarray, row: np.ndarray, corner: float) -> np.ndarray:
    """``[[block, column], [row, corner]]`` over the last two axes."""
    *lead, rows, columns = block.shape
    out = np.empty((*lead, rows + 1, columns + 1))
    out[..., :rows, :columns], out[..., :rows, columns], out[..., rows, :columns] = block, column, row
    out[..., rows, columns] = corner
    return out


def refit(
    start: np.ndarray, target: np.ndarray, inputs: np.ndarray, cross: np.ndarray, damping: float = DAMPING, bias: bool = False
) -> np.ndarray:
    """Rows ``[R, C]`` closest to ``target [R, C_ref]``'s outputs on the images, ridge toward ``start``.

    ``inputs`` is X Xᵀ ``[C, C]`` and ``cross`` X_ref Xᵀ ``[C_ref, C]`` (batched over a leading axis for
    depthwise layers). With ``bias``, the last column is the constant input: it gets no ridge, so each
    output's mean over the images comes out exactly as the target's.
    """
    diagonal = np.diagonal(inputs, axis1=-2, axis2=-1)
    weights = diagonal[..., :-1] if bias else diagonal
    ridge = damping * weights.mean(axis=-1, keepdims=True) + 1e-8
    penalty = np.ones(inputs.shape[-1])
    if bias:
        penalty[-1] = 1e-8
    ridge = ridge * penalty
    regularised = inputs + ridge[..., np.newaxis, :] * np.eye(inputs.shape[-1])
    if inputs.ndim == 3:  # depthwise: one small system per channel, rows [channels, k]
        right = np.einsum("cr,crk->ck", target, cross) + ridge * start
        return np.linalg.solve(regularised, right[..., np.newaxis])[..., 0]
    right = target @ cross + ridge * start
    return np.linalg.solve(regularised.T, right.T).T  # X Xᵀ is symmetric


#: A layer with fewer calibration samples than this per input column is not refit: ``X Xᵀ`` is rank-deficient and a
#: refit fits the calibration images instead of the layer (a classifier reading 1,280 features sees one sample per image).
MIN_SAMPLES_PER_COLUMN = 2


def too_few_samples(moments: Moments, view: LinearLayer) -> bool:
    """Whether the calibration gave fewer than :data:`MIN_SAMPLES_PER_COLUMN` samples per input column of the layer."""
    return moments.count < MIN_SAMPLES_PER_COLUMN * view.rows().shape[1]
