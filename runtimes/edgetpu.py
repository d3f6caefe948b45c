"""Edge TPU backend: the compiled model through the ``libedgetpu`` delegate.

The delegate is loaded through whichever TFLite interpreter package is present. A missing
runtime library or a missing device gives one message naming both causes and the fix;
where the bundle's profile allows a ``tflite`` fallback, the plain int8 model runs on the
CPU instead, with a warning, and the backend records why.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import platform
import re

import numpy as np

from tillsight.bundle import Bundle, artifact_path
from tillsight.errors import BackendUnavailableError, OptionsError
from tillsight.profiles import BackendKind
from tillsight.staging import published_path

from .tflite import TFLiteBackend, import_interpreter

__all__ = ["DELEGATE_LIBRARIES", "EdgeTPUBackend", "check_device", "load_edgetpu_delegate"]

logger = logging.getLogger(__name__)

DELEGATE_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_DEVICE = re.compile(r"^(usb|pci)?(:\d+)?$")


def check_device(device: str) -> str:
    """Validate an Edge TPU device string: ``usb``, ``usb:N``, ``pci``, ``pci:N``, ``:N`` or empty.

    Raises:
        OptionsError: Anything else.
    """
    if not _DEVICE.match(device or ""):
        raise OptionsError(f"Edge TPU device {device!r} is not one of usb, usb:N, pci, pci:N, :N")
    return device


def load_edgetpu_delegate(device: str, library: str | None = None) -> object:
    """Load the Edge TPU delegate for ``device``.

    Raises:
        BackendUnavailableError: The runtime library is missing, or no Edge TPU answered.
    """
    library = library or DELEGATE_LIBRARIES.get(platform.system(), "libedgetpu.so.1")
    module_name, _ = import_interpreter()
    module = importlib.import_module(module_name if module_name != "tensorflow.lite" else "tensorflow.lite.experimental")
    try:
        ctypes.CDLL(library)
    except OSError:
        raise BackendUnavailableError(
            f"the Edge TPU runtime {library} is not installed: install libedgetpu1-std from Coral's package "
            f"repository (and plug in the Coral device {device or 'usb'})"
        ) from None
    options = {"device": device} if device else {}
    try:
        return module.load_delegate(library, options)
    except (ValueError, RuntimeError, AttributeError) as exc:  # AttributeError: not a delegate library
        raise BackendUnavailableError(
            f"{library} is installed but no Edge TPU answered on '{device or 'any'}': plug in the Coral device, "
            f"check the device string (usb, usb:N, pci, pci:N) and its permissions (udev rules)"
        ) from exc


class EdgeTPUBackend(TFLiteBackend):
    """A TFLite interpreter with the Edge TPU delegate (or the CPU, as the profile allows)."""

    name = "edgetpu"

    @classmethod
    def open(cls, bundle: Bundle, threads: int, device: str | None = None, throughput: bool = False) -> TFLiteBackend:
        runtime = bundle.manifest.runtime
        device = check_device(device if device is not None else runtime.device)
        compiled = runtime.options.get("edgetpu_model")
        try:
            if not compiled:
                where = published_path(bundle.path)  # a conversion measures its bundle before publishing it
                raise BackendUnavailableError(
                    f"bundle {where} holds no Edge TPU-compiled model: run "
                    f"'tillsight compile-edgetpu {where}' where edgetpu_compiler is installed"
                )
            delegate = load_edgetpu_delegate(device)
            backend = cls(artifact_path(bundle.path, compiled), threads, delegates=(delegate,))
            backend.engine += f" + Edge TPU ({device or 'any'})"
            # The first Edge TPU inference copies the parameters onto the chip: do it now.
            backend.invoke(np.zeros(backend.input_tensor.shape, dtype=backend.input_tensor.dtype))
            return backend
        except BackendUnavailableError as exc:
            if BackendKind.TFLITE not in runtime.backend_fallbacks:
                raise
            logger.warning("Edge TPU unavailable, running the int8 model on the CPU as the profile allows: %s", exc)
            fallback = TFLiteBackend(bundle.model_path, threads)
            fallback.engine += " (CPU fallback)"
            fallback.fallback_reason = str(exc)
            return fallback
