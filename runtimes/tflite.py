"""TFLite backend: LiteRT's interpreter on the CPU (XNNPACK), as on Raspberry Pi class devices.

The interpreter package is chosen at load time, in this order: ``ai_edge_litert``
(LiteRT, preferred), ``tflite_runtime`` (older device images; needs numpy<2), then
``tensorflow.lite`` (a converting workstation). The choice is logged and exposed as
:attr:`TFLiteBackend.engine`. None of them is imported before a bundle is loaded.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tillsight._native import native_stderr_to_log
from tillsight.bundle import Bundle
from tillsight.errors import BackendUnavailableError, BundleError, InferenceError, summarize

from .base import Backend, TensorSpec

__all__ = ["INTERPRETER_MODULES", "TFLiteBackend", "import_interpreter"]

logger = logging.getLogger(__name__)

#: Where an ``Interpreter`` class may be found, in order of preference.
INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


def import_interpreter(preferred: tuple[str, ...] = INTERPRETER_MODULES) -> tuple[str, Any]:
    """Find the first importable TFLite interpreter package.

    Returns:
        ``(module name, Interpreter class)``.

    Raises:
        BackendUnavailableError: None of the packages can be imported.
    """
    failures = []
    for module_name in preferred:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or a numpy ABI error from tflite_runtime
            failures.append(f"{module_name}: {type(exc).__name__}")
            continue
        return module_name, module.Interpreter
    raise BackendUnavailableError(
        "no TFLite interpreter is installed (tried " + ", ".join(failures) + "); "
        "install one with: pip install 'tillsight[tflite]'"
    )


def _tensor_spec(details: dict[str, Any]) -> TensorSpec:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return TensorSpec(
        shape=tuple(int(d) for d in details["shape"]),
        dtype=np.dtype(details["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


class TFLiteBackend(Backend):
    """A ``.tflite`` model in a TFLite interpreter on the CPU."""

    name = "tflite"

    def __init__(
        self,
        model_path: Path,
        threads: int,
        interpreter_modules: tuple[str, ...] = INTERPRETER_MODULES,
        delegates: tuple[Any, ...] = (),
    ):
        """Load the model and allocate its tensors.

        Args:
            model_path: The ``.tflite`` file (already verified against the manifest).
            threads: CPU threads for the interpreter (XNNPACK).
            interpreter_modules: Interpreter packages to try, in order.
            delegates: Loaded TFLite delegates (e.g. the Edge TPU's).

        Raises:
            BackendUnavailableError: No interpreter package is installed.
            BundleError: The interpreter rejects the model file.
        """
        self.engine, interpreter_class = import_interpreter(interpreter_modules)
        try:
            with native_stderr_to_log(f"loading {model_path.name}"):
                self._interpreter = interpreter_class(
                    model_path=str(model_path), num_threads=threads, experimental_delegates=list(delegates) or None
                )
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{self.engine} cannot load {model_path}: {summarize(exc)}") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{model_path} has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1")
        self._input_index = inputs[0]["index"]
        self._output_index = outputs[0]["index"]
        self.input_tensor = _tensor_spec(inputs[0])
        self.output_tensor = _tensor_spec(outputs[0])
        self.threads = threads
        logger.info("loaded %s with %s on %d thread(s)", model_path, self.engine, threads)

    @classmethod
    def open(cls, bundle: Bundle, threads: int, device: str | None = None, throughput: bool = False) -> TFLiteBackend:
        return cls(bundle.model_path, threads)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        if self._interpreter is None:
            raise InferenceError("the TFLite backend is closed")
        try:
            self._interpreter.set_tensor(self._input_index, tensor)
            self._interpreter.invoke()
            output: np.ndarray = self._interpreter.get_tensor(self._output_index).copy()
            return output
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"{self.engine} failed on an input of shape {tensor.shape}: {exc}") from exc

    def close(self) -> None:
        self._interpreter = None
