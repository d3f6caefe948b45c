"""Pin the public API: a change to it must be deliberate."""

from __future__ import annotations

import tillsight
import tillsight.pipelines
import tillsight.runtimes
import tillsight.testing


def test_public_names_are_pinned():
    assert set(tillsight.__all__) == {
        "__version__", "AccuracyError", "BackendUnavailableError", "Bundle", "BundleError", "CalibrationError",
        "Classifier", "ColorOrder", "ConversionError", "ConversionOptions", "DataError", "DistillResult", "DistillationOptions", "InferenceError",
        "InputRange", "InputSpec", "Manifest", "ModelLoadError", "OptionsError", "Prediction", "Profile", "ProfileError",
        "PruningOptions", "QatOptions", "SignatureError", "SinkError", "SourceError", "TillsightError", "convert", "distill", "list_profiles", "load", "load_profile", "preprocess", "read_bundle",
        "BenchmarkReport", "BudgetError", "benchmark", "read_benchmark", "tune", "TuneResult",
    }
    assert all(hasattr(tillsight, name) for name in tillsight.__all__)
    assert set(tillsight.runtimes.__all__) == {"Backend", "TensorSpec", "BACKENDS", "available_cores", "open_backend"}
    assert set(tillsight.testing.__all__) == {"FakeBackend", "fake_classifier"}
    assert set(tillsight.pipelines.__all__) == {
        "Basket", "CameraSource", "Capture", "CaptureOptions", "CaptureStats", "CheckoutLogic", "CheckoutOptions",
        "CheckoutPipeline", "Event", "Frame", "FrameResult", "ImageFolderSource", "JsonLines", "Lane", "MultiLanePipeline", "PipelineMetrics", "PipelineOptions",
        "ProductRecognized", "Sink", "SinkDispatcher", "SinkStats", "Source", "SourceState", "StreamSource", "TrayMonitor",
        "UnknownProduct", "VideoFileSource", "crop_roi", "open_source",
    }
    assert all(hasattr(tillsight.pipelines, name) for name in tillsight.pipelines.__all__)


def test_every_error_is_a_tillsight_error():
    errors = [getattr(tillsight, name) for name in tillsight.__all__ if name.endswith("Error")]
    assert len(errors) == 15
    assert all(issubclass(error, tillsight.TillsightError) for error in errors)
    assert issubclass(tillsight.CalibrationError, tillsight.DataError)
