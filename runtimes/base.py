"""The runtime backend interface: load, input and output tensors, invoke (one or many), close.

A backend only moves tensors in and out of one inference engine. Task logic (preprocessing,
dequantization, top-k, voting) lives above it in :class:`tillsight.Classifier` and never
touches backend objects. Backends are not thread-safe; the classifier serialises calls.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tillsight.bundle import Bundle

__all__ = ["TensorSpec", "Backend"]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Shape, type and quantization of one model tensor (scale 0 means not quantized)."""

    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0


class Backend(abc.ABC):
    """One loaded model in one inference engine."""

    #: Short name of the engine, e.g. ``tflite``.
    name: str = ""
    #: What actually runs the model, e.g. ``ai_edge_litert`` or ``CPU`` (for logs and manifests).
    engine: str = ""
    #: The model's single input tensor (set when the model is loaded).
    input_tensor: TensorSpec
    #: The model's single output tensor.
    output_tensor: TensorSpec
    #: Why this runs in place of the accelerator the bundle asked for (None: it runs where asked).
    fallback_reason: str | None = None

    @classmethod
    @abc.abstractmethod
    def open(cls, bundle: Bundle, threads: int, device: str | None = None, throughput: bool = False) -> Backend:
        """Load a verified bundle's model with the settings its manifest records.

        Args:
            bundle: The verified bundle.
            threads: CPU threads.
            device: Overrides the manifest's device (e.g. ``GPU.1``, ``usb:1``).
            throughput: Several frames will be in flight (:meth:`invoke_many`, multi-lane
                kiosks): engines that can overlap requests set up for it (OpenVINO's
                ``THROUGHPUT`` hint); the others ignore it.
        """

    @abc.abstractmethod
    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on one input tensor (with batch dimension) and return the raw output.

        Raises:
            InferenceError: The engine failed on this input.
        """

    def invoke_many(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model on several input tensors; raw outputs in the same order.

        Engines with parallel requests overlap them; by default they run one after another.

        Raises:
            InferenceError: The engine failed on one of them.
        """
        return [self.invoke(tensor) for tensor in tensors]

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine's resources; the backend cannot be used afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
