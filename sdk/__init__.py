"""tillsight: Keras product classifiers to full-integer models on in-store devices.

Convert on a workstation, run on the kiosk::

    import tillsight
    bundle = tillsight.convert("model.keras", "raspberry-pi-4", calibration="train.txt", out="bundles")
    with tillsight.load(bundle.path) as classifier:
        print(classifier.classify(frame, top_k=3))

Camera-frame pipelines for unmanned checkout live in :mod:`tillsight.pipelines`.

Importing this package never imports TensorFlow. :func:`convert`, :func:`distill`,
:class:`DistillResult`, :func:`tune` and :class:`TuneResult` are re-exported from the converting side (:mod:`tillsight.converters`),
which is imported the first time one of them is used; so are :func:`benchmark`,
:func:`read_benchmark` and :class:`BenchmarkReport` (:mod:`tillsight.benchmarking`), and
:class:`Kiosk` and :class:`KioskOptions` (:mod:`tillsight.kiosk`: a kiosk's bundle, lanes and sinks,
with bundles swapped in while it runs). A fleet of kiosks is :mod:`tillsight.fleet`.
"""

import importlib
from typing import Any

from ._version import __version__
from .bundle import Bundle, Manifest, read_bundle
from .classifier import Classifier, Prediction, load
from .conversion_options import ConversionOptions
from .errors import (
    AccuracyError,
    BackendUnavailableError,
    BudgetError,
    BundleError,
    CalibrationError,
    ConversionError,
    DataError,
    DownloadError,
    FleetError,
    InferenceError,
    ModelLoadError,
    OptionsError,
    ProfileError,
    SignatureError,
    SinkError,
    SourceError,
    TillsightError,
)
from .preprocess import ColorOrder, InputRange, InputSpec, preprocess
from .profiles import DistillationOptions, Profile, PruningOptions, QatOptions, list_profiles, load_profile

__all__ = [
    "__version__",
    "benchmark",
    "AccuracyError",
    "BackendUnavailableError",
    "BenchmarkReport",
    "BudgetError",
    "Bundle",
    "BundleError",
    "CalibrationError",
    "Classifier",
    "ColorOrder",
    "ConversionError",
    "ConversionOptions",
    "DataError",
    "DistillResult",
    "DownloadError",
    "FleetError",
    "Kiosk",
    "KioskOptions",
    "DistillationOptions",
    "InferenceError",
    "InputRange",
    "InputSpec",
    "Manifest",
    "ModelLoadError",
    "OptionsError",
    "Prediction",
    "Profile",
    "ProfileError",
    "PruningOptions",
    "QatOptions",
    "SignatureError",
    "SinkError",
    "SourceError",
    "TillsightError",
    "convert",
    "distill",
    "list_profiles",
    "load",
    "load_profile",
    "preprocess",
    "read_benchmark",
    "read_bundle",
    "tune",
    "TuneOptions",
    "TuneResult",
]

#: Public names imported the first time they are used, and their modules: the converting side
#: (TensorFlow), and on-device benchmarking (kept out of a kiosk app's start-up).
_LAZY = {
    "convert": "tillsight.converters.conversion",
    "distill": "tillsight.converters.distill",
    "DistillResult": "tillsight.converters.distill",
    "tune": "tillsight.converters.tune",
    "TuneResult": "tillsight.converters.tune",
    "TuneOptions": "tillsight.converters.tune_space",
    "benchmark": "tillsight.benchmarking",
    "read_benchmark": "tillsight.benchmarking",
    "BenchmarkReport": "tillsight.benchmarking",
    "Kiosk": "tillsight.kiosk",
    "KioskOptions": "tillsight.kiosk",
}


def __getattr__(name: str) -> Any:
    """Import the converting side and benchmarking only when one of their names is used (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tillsight' has no attribute '{name}'")
