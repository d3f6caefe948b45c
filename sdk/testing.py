"""Test helpers that ship with tillsight: a fake backend for pipeline and task-logic tests.

Like httpx's ``MockTransport``, :class:`FakeBackend` lets kiosk apps test their own code
around a :class:`~tillsight.Classifier` without a model file or an inference engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .bundle import Bundle
from .classifier import Classifier
from .preprocess import InputSpec
from .runtimes.base import Backend, TensorSpec

__all__ = ["FakeBackend", "fake_classifier"]


class FakeBackend(Backend):
    """A backend whose output is computed by a Python function of the input tensor."""

    name = "fake"
    engine = "fake"

    def __init__(self, respond: Callable[[np.ndarray], np.ndarray], input_tensor: TensorSpec, output_tensor: TensorSpec):
        """Args:
        respond: Maps the input tensor (batch of 1) to the raw output tensor.
        input_tensor: The input tensor the fake model declares.
        output_tensor: The output tensor the fake model declares.
        """
        self._respond = respond
        self.input_tensor = input_tensor
        self.output_tensor = output_tensor
        self.calls = 0
        self.closed = False

    @classmethod
    def open(cls, bundle: Bundle, threads: int, device: str | None = None, throughput: bool = False) -> FakeBackend:
        raise NotImplementedError("a FakeBackend is built directly, never opened from a bundle")

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(self._respond(tensor), dtype=self.output_tensor.dtype)

    def close(self) -> None:
        self.closed = True


def fake_classifier(
    labels: Sequence[str], respond: Callable[[np.ndarray], np.ndarray], size: tuple[int, int] = (32, 32)
) -> Classifier:
    """A float classifier over ``labels`` whose scores come from ``respond(tensor)``."""
    height, width = size
    spec = InputSpec(height=height, width=width)
    backend = FakeBackend(
        respond,
        TensorSpec((1, height, width, 3), "float32"),
        TensorSpec((1, len(labels)), "float32"),
    )
    return Classifier(backend, labels, spec)
