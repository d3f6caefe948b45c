"""OpenVINO backend: an IR on an Intel iGPU (GPU), the CPU, or AUTO.

One ``openvino.Core`` serves the whole process. The device comes from the bundle's
profile: when it is missing from ``Core.available_devices`` the profile's device
fallbacks are tried with a warning, else loading fails with a message naming the fix.
``CACHE_DIR`` is set (``$TILLSIGHT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tillsight/openvino``,
else ``~/.cache/tillsight/openvino``) so that a second start on an iGPU skips the kernel
compilation that otherwise takes minutes.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tillsight.bundle import Bundle
from tillsight.errors import BackendUnavailableError, BundleError, InferenceError, summarize
from tillsight.profile_tables import PerformanceHint

from .base import Backend, TensorSpec

__all__ = ["OpenVINOBackend", "cpu_has_vnni", "default_cache_dir", "select_device", "shared_core"]

logger = logging.getLogger(__name__)

_core: Any = None
_core_lock = threading.Lock()


def shared_core() -> Any:
    """The process's one ``openvino.Core``.

    Raises:
        BackendUnavailableError: openvino is not installed.
    """
    global _core
    with _core_lock:
        if _core is None:
            try:
                import openvino
            except ImportError as exc:
                raise BackendUnavailableError(
                    "this bundle runs on OpenVINO, which is not installed; install it with: pip install 'tillsight[openvino]'"
                ) from exc
            _core = openvino.Core()
        return _core


def default_cache_dir() -> Path:
    """Where compiled models are cached between starts."""
    if os.environ.get("TILLSIGHT_CACHE_DIR"):
        return Path(os.environ["TILLSIGHT_CACHE_DIR"]) / "openvino"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tillsight" / "openvino"


#: /proc/cpuinfo flags of x86 CPUs whose int8 dot products sum in 32 bits.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> bool | None:
    """Whether this CPU runs an IR's 8-bit int8 weights exactly.

    x86 CPUs without VNNI multiply u8 activations by s8 weights in pairs summed into saturating
    int16, so full-range weights overflow there; ARM CPUs and x86 CPUs with VNNI or AMX do not.

    Returns:
        True or False; None on x86 where ``cpuinfo`` cannot be read (not Linux).
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(_VNNI_FLAGS.intersection(flags))


def _present(device: str, available: Sequence[str]) -> bool:
    if device == "AUTO" or device.startswith(("AUTO:", "MULTI:", "HETERO:")):
        return bool(available)
    family = device.split(".")[0]
    return any(name == device or (device == family and name.split(".")[0] == family) for name in available)


def select_device(requested: str, fallbacks: Sequence[str], available: Sequence[str]) -> tuple[str, str | None]:
    """Pick the device to compile for.

    Args:
        requested: The profile's device (``GPU``, ``GPU.1``, ``CPU``, ``AUTO``...).
        fallbacks: Devices allowed when ``requested`` is absent, in order.
        available: ``Core.available_devices``.

    Returns:
        ``(device, warning)``; the warning is None unless a fallback was taken.

    Raises:
        BackendUnavailableError: Neither the device nor an allowed fallback is present.
    """
    requested = requested or "CPU"
    if _present(requested, available):
        return requested, None
    for fallback in fallbacks:
        if _present(fallback, available):
            return fallback, (
                f"OpenVINO device {requested} is not available (found: {', '.join(available) or 'none'}); "
                f"running on {fallback} as the profile allows"
            )
    hint = " (install the Intel GPU compute runtime, e.g. intel-opencl-icd, for an iGPU)" if requested.startswith("GPU") else ""
    raise BackendUnavailableError(
        f"the profile needs OpenVINO device {requested} but this machine has {', '.join(available) or 'none'}{hint}; "
        'or allow a fallback in the profile: [openvino] device_fallbacks = ["CPU"]'
    )


class OpenVINOBackend(Backend):
    """An OpenVINO IR compiled for one device."""

    name = "openvino"

    def __init__(
        self,
        model_path: Path,
        device: str,
        device_fallbacks: Sequence[str] = (),
        performance_hint: PerformanceHint = PerformanceHint.LATENCY,
        threads: int = 0,
        cache_dir: Path | None = None,
        core: Any = None,
        cpu_precision: str | None = None,
        cpu_needs_vnni: bool = False,
    ):
        """Compile the IR.

        Args:
            model_path: ``model.xml`` (``model.bin`` beside it), verified against the manifest.
            device: Requested device.
            device_fallbacks: Devices allowed when it is absent (the profile's ``[openvino] device_fallbacks``).
            performance_hint: ``LATENCY`` (one frame at a time) or ``THROUGHPUT`` (many in flight).
            threads: CPU inference threads (0: OpenVINO's choice); ignored on other devices.
            cache_dir: Compiled-model cache; defaults to :func:`default_cache_dir`.
            core: An ``openvino.Core`` (defaults to the shared one).
            cpu_precision: ``INFERENCE_PRECISION_HINT`` when the model runs on the CPU (``f32`` for a float IR);
                None: the plugin's default (bfloat16 on CPUs that have it).
            cpu_needs_vnni: The IR's int8 weights use all 8 bits: a CPU without VNNI (see :func:`cpu_has_vnni`)
                would overflow its int8 kernels, so there the IR runs its int8 arithmetic in f32 instead (exact, slower).

        Raises:
            BackendUnavailableError: openvino or the device is missing, or the IR would overflow the CPU it runs on.
            BundleError: OpenVINO cannot read or compile the IR.
        """
        core = core or shared_core()
        self.device, warning = select_device(device, device_fallbacks, list(core.available_devices))
        if warning:
            logger.warning(warning)
        self.fallback_reason = warning
        on_cpu = self.device.startswith("CPU")
        exact_int8 = _exact_int8_config(model_path) if cpu_needs_vnni and on_cpu else {}
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        if exact_int8:  # the cache's key leaves these settings out: a compiled int8 model would come back
            self.cache_dir = self.cache_dir / "int8-in-f32"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint.value, "CACHE_DIR": str(self.cache_dir)}
        if threads and on_cpu:
            config["INFERENCE_NUM_THREADS"] = threads
        if cpu_precision and on_cpu:
            config["INFERENCE_PRECISION_HINT"] = cpu_precision
        config.update(exact_int8)
        try:
            self._compiled = core.compile_model(str(model_path), self.device, config)
        except RuntimeError as exc:
            raise BundleError(f"OpenVINO cannot compile {model_path} for {self.device}: {summarize(exc)}") from exc
        if len(self._compiled.inputs) != 1 or len(self._compiled.outputs) != 1:
            raise BundleError(f"{model_path} must have one input and one output")
        self.execution_devices = list(self._compiled.get_property("EXECUTION_DEVICES"))
        if cpu_needs_vnni and not on_cpu and any(d.startswith("CPU") for d in self.execution_devices):
            if cpu_has_vnni() is not True:  # AUTO and the like chose the CPU: its int8 config cannot be set here
                raise BackendUnavailableError(
                    f"{model_path} has 8-bit int8 weights, which overflow on a CPU without VNNI, and {self.device} "
                    "chose the CPU: name the device (CPU or GPU) in the profile"
                )
        self.engine = f"openvino on {', '.join(self.execution_devices)}"
        self.threads = threads
        self.performance_hint = performance_hint
        self._request = self._compiled.create_infer_request()
        self._queue: Any = None  # an AsyncInferQueue, made by the first infer_many
        self.input_tensor = _spec(self._compiled.inputs[0])
        self.output_tensor = _spec(self._compiled.outputs[0])
        logger.info("compiled %s for %s (runs on %s), hint %s", model_path, self.device, self.engine, performance_hint.value)

    @classmethod
    def open(cls, bundle: Bundle, threads: int, device: str | None = None, throughput: bool = False) -> OpenVINOBackend:
        runtime = bundle.manifest.runtime
        options = runtime.options
        return cls(
            bundle.model_path,
            device or runtime.device,
            device_fallbacks=tuple(options.get("device_fallbacks", ())),
            performance_hint=PerformanceHint.THROUGHPUT
            if throughput
            else PerformanceHint(str(options.get("performance_hint", PerformanceHint.LATENCY.value))),
            threads=threads,
            cpu_precision=options.get("cpu_inference_precision"),
            cpu_needs_vnni=bool(options.get("cpu_needs_vnni", False)),
        )

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        if self._request is None:
            raise InferenceError("the OpenVINO backend is closed")
        try:
            return np.array(self._request.infer({0: tensor})[0], copy=True)
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO failed on an input of shape {tensor.shape}: {exc}") from exc

    def invoke_many(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Several inputs at once through an ``AsyncInferQueue``: with the ``THROUGHPUT`` hint the
        device runs them in parallel streams (one request at a time otherwise)."""
        if len(tensors) < 2 or self.performance_hint is not PerformanceHint.THROUGHPUT:
            return super().invoke_many(tensors)
        if self._compiled is None:
            raise InferenceError("the OpenVINO backend is closed")
        if self._queue is None:
            import openvino

            self._queue = openvino.AsyncInferQueue(
                self._compiled, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            )
        outputs: list[np.ndarray | None] = [None] * len(tensors)

        def done(request: Any, index: int) -> None:
            outputs[index] = np.array(request.get_output_tensor(0).data, copy=True)

        self._queue.set_callback(done)
        try:
            for index, tensor in enumerate(tensors):
                self._queue.start_async({0: tensor}, index)
            self._queue.wait_all()
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO failed on {len(tensors)} inputs of shape {tensors[0].shape}: {exc}") from exc
        return [output for output in outputs if output is not None]

    def close(self) -> None:
        self._request = None
        self._queue = None
        self._compiled = None


def _exact_int8_config(model_path: Path) -> dict[str, Any]:
    """CPU settings that keep an IR with 8-bit int8 weights exact here: none with VNNI; without it (or where this
    cannot be told) OpenVINO's low-precision kernels are turned off, and the quantized graph runs in f32, as the
    iGPU's 32-bit sums compute it."""
    has_vnni = cpu_has_vnni()
    if has_vnni:
        return {}
    why = "has no VNNI" if has_vnni is False else "may lack VNNI (its flags cannot be read)"
    logger.warning(
        "this CPU %s, where the int8 kernels would overflow %s's 8-bit weights: running its int8 arithmetic in f32 "
        "(exact, slower); [openvino] int8_weight_bits = 7 in the profile gives a bundle that runs in int8 here",
        why,
        model_path,
    )
    return {"LP_TRANSFORMS_MODE": "NO", "INFERENCE_PRECISION_HINT": "f32"}


def _spec(port: Any) -> TensorSpec:
    return TensorSpec(
        shape=tuple(int(d) for d in port.get_partial_shape().to_shape()),
        dtype=np.dtype(port.get_element_type().to_dtype()).name,
    )
