"""Runtime backends: the device side of tillsight (never imports TensorFlow itself).

One table maps a bundle's backend to the class that runs it. Backend modules and the
engines they wrap are imported only when a bundle of that kind is opened.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os

from tillsight.bundle import Bundle
from tillsight.errors import BackendUnavailableError, OptionsError
from tillsight.profiles import BackendKind

from .base import Backend, TensorSpec

__all__ = ["Backend", "TensorSpec", "BACKENDS", "available_cores", "open_backend"]

logger = logging.getLogger(__name__)

#: Backend kind -> "module:Class" that runs it.
BACKENDS: dict[BackendKind, str] = {
    BackendKind.TFLITE: "tillsight.runtimes.tflite:TFLiteBackend",
    BackendKind.OPENVINO: "tillsight.runtimes.openvino:OpenVINOBackend",
    BackendKind.EDGETPU: "tillsight.runtimes.edgetpu:EdgeTPUBackend",
}


def open_backend(bundle: Bundle, threads: int | None = None, device: str | None = None, throughput: bool = False) -> Backend:
    """Open the backend a verified bundle was built for.

    Args:
        bundle: A bundle from :func:`tillsight.bundle.read_bundle`.
        threads: CPU threads; defaults to the profile's thread count in the manifest.
        device: Accelerator device, overriding the manifest's (``GPU.1``, ``usb:1``...).
        throughput: Several frames will be in flight (see :meth:`Backend.open`).

    Returns:
        The loaded backend.

    Raises:
        BackendUnavailableError: This version has no backend of that kind, or its package
            is not installed.
        BundleError: The engine rejects the model file.
    """
    kind = bundle.manifest.runtime.backend
    if kind not in BACKENDS:
        raise BackendUnavailableError(
            f"bundle {bundle.path} needs the '{kind.value}' backend, which this tillsight version cannot run yet"
        )
    module_name, class_name = BACKENDS[kind].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    if threads is not None and threads < 1:
        raise OptionsError(f"threads must be at least 1, got {threads}")
    threads = _asked_threads(threads) if threads is not None else _profile_threads(bundle.manifest.runtime.threads)
    backend: Backend = backend_class.open(bundle, threads, device, throughput)
    return backend


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _profile_threads(threads: int) -> int:
    """The profile's thread count, capped at the cores present: more threads than cores only take turns."""
    cores = available_cores()
    if threads > cores:
        _say_capped(threads, cores)
        return cores
    return threads


def _asked_threads(threads: int) -> int:
    """Threads asked for explicitly, capped at the cores present with one warning."""
    cores = available_cores()
    if threads > cores:
        _warn_capped(threads, cores)
        return cores
    return threads


@functools.cache
def _warn_capped(threads: int, cores: int) -> None:
    logger.warning("%d threads asked for; this machine gives the process %d cores: running on %d", threads, cores, cores)


@functools.cache
def _say_capped(threads: int, cores: int) -> None:
    logger.info("the profile asks for %d threads; this machine gives the process %d cores: running on %d", threads, cores, cores)
