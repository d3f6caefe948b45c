"""The converter side's one import of TensorFlow and Keras, with their start-up chatter
(CUDA probes, CPU feature notes) sent to the debug log instead of the user's terminal."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tillsight._native import native_stderr_to_log  # noqa: E402
from tillsight.errors import BackendUnavailableError  # noqa: E402

try:
    with native_stderr_to_log("importing TensorFlow"):
        import keras  # noqa: E402
        import tensorflow as tf  # noqa: E402
except ImportError as exc:  # a device-side install: converting happens on a workstation
    raise BackendUnavailableError(
        f"converting needs TensorFlow and Keras ({exc.name} is missing): pip install 'tillsight[convert]'"
    ) from exc

__all__ = ["keras", "tf"]
