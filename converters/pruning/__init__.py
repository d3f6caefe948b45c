"""Pruning before quantization, natively on Keras 3 (TensorFlow Model Optimization needs Keras 2).

Two modes, chosen by the profile or ``--prune``:

* ``unstructured``: the smallest weights of every kernel become zero (:mod:`.magnitude`),
  reaching the target sparsity on a schedule while the model fine-tunes. The int8 file
  compresses better; dense kernels run at the same speed.
* ``channels``: whole filters go. :mod:`.channels` finds the channels that must go together,
  :mod:`.channel_choice` picks which go, :mod:`.compensation` folds their means into the next
  layer, :mod:`.rebuild` builds the smaller model; it is then fine-tuned
  (:mod:`tillsight.converters.training`) to win back accuracy. Fewer multiply-adds: faster on
  every backend, the Edge TPU included.

:func:`prune` never changes the model it is given.
"""

from __future__ import annotations

from .prune import PruneResult, prune

__all__ = ["PruneResult", "prune"]
