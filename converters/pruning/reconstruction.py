"""Least-squares reconstruction: each layer of a pruned model refit to reproduce the original's outputs.

Removing channels or weights changes what every later layer sees. Fine-tuning can win the
accuracy back slowly, and noisily, on a few thousand photos. Most of it comes back in one
shot (He et al. 2017, ThiNet; the same least squares SparseGPT and GPTQ solve): walk the
layers in order and refit each one's kept weights so that, on calibration images, its
outputs from the pruned model's inputs match the original layer's outputs from the
original inputs (:func:`..least_squares.refit`; the constant input that carries the bias refits
mean shifts too, what :mod:`.compensation` folds by hand).

Measured on the sample EfficientNet-Lite0 (81.08% val top-1) and a held-out Lite0: see the
bench (``bench/RESULTS.md``, pruning section).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..layer_inputs import LayerInputs, kernel_layer, walk
from ..least_squares import LinearLayer

__all__ = ["reconstruct"]

logger = logging.getLogger(__name__)


def reconstruct(
    pruned: Any,
    original: Any,
    images: np.ndarray,
    output_channels: Callable[[Any], np.ndarray | None],
    wanted: Callable[[Any], bool] = kernel_layer,
) -> dict[str, Any]:
    """Refit every wanted layer of ``pruned`` so its outputs match ``original``'s on ``images``, in graph order.

    Args:
        pruned: The pruned model (changed in place); the same graph as ``original`` with fewer channels or weights.
        original: The model before pruning (not changed).
        images: Model inputs (calibration images).
        output_channels: The original output channels each pruned layer kept (by the original layer), None: all.
        wanted: Which layers to refit.

    Returns:
        ``{"layers", "images", "seconds"}``.
    """
    started = time.perf_counter()
    refitted = 0

    def visit(found: LayerInputs) -> None:
        nonlocal refitted
        kept = output_channels(found.reference)
        view = LinearLayer.of(found.layer)
        moments = found.moments(channel_map=kept if view.depthwise else None)
        view.set_augmented(view.refit_to(LinearLayer.of(found.reference), moments, kept), view.has_bias)
        refitted += 1

    walk(pruned, images, visit, wanted, reference=original)
    seconds = round(time.perf_counter() - started, 1)
    logger.info("reconstruction: %d layers refit on %d images in %.1f s", refitted, len(images), seconds)
    return {"layers": refitted, "images": int(len(images)), "seconds": seconds}
