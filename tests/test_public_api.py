"""Pin the public API: a change to it must be deliberate."""

from __future__ import annotations

import importlib.util

import pytest

import tillsight
import tillsight.pipelines
import tillsight.runtimes
import tillsight.testing


def name_needs_tensorflow(name: str) -> bool:
    return tillsight._LAZY.get(name, "").startswith("tillsight.converters")  # noqa: SLF001


def test_public_names_are_pinned():
    assert set(tillsight.__all__) == {
        "__version__",
        "AccuracyError",
        "BackendUnavailableError",
        "Bundle",
        "BundleError",
        "CalibrationError",
        "Classifier",
        "ColorOrder",
        "ConversionError",
        "ConversionOptions",
        "DataError",
        "DistillResult",
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
        "read_bundle",
        "BenchmarkReport",
        "BudgetError",
        "benchmark",
        "read_benchmark",
        "tune",
        "TuneResult",
        "TuneOptions",
        "Kiosk",
        "KioskOptions",
        "FleetError",
        "DownloadError",
    }
    converting = importlib.util.find_spec("tensorflow") is not None  # a device-side install has no converting side
    assert all(hasattr(tillsight, name) for name in tillsight.__all__ if converting or not name_needs_tensorflow(name))
    assert set(tillsight.runtimes.__all__) == {"Backend", "TensorSpec", "BACKENDS", "available_cores", "open_backend"}
    assert set(tillsight.testing.__all__) == {"FakeBackend", "fake_classifier"}
    assert set(tillsight.pipelines.__all__) == {
        "Basket",
        "CameraSource",
        "Capture",
        "CaptureOptions",
        "CaptureStats",
        "CheckoutLogic",
        "CheckoutOptions",
        "CheckoutPipeline",
        "Event",
        "Frame",
        "FrameResult",
        "ImageFolderSource",
        "JsonLines",
        "Lane",
        "MultiLanePipeline",
        "PipelineMetrics",
        "PipelineOptions",
        "ProductRecognized",
        "Sink",
        "SinkDispatcher",
        "SinkStats",
        "Source",
        "SourceState",
        "StreamSource",
        "TrayMonitor",
        "UnknownProduct",
        "VideoFileSource",
        "crop_roi",
        "open_source",
    }
    assert all(hasattr(tillsight.pipelines, name) for name in tillsight.pipelines.__all__)


def test_every_error_is_a_tillsight_error():
    errors = [getattr(tillsight, name) for name in tillsight.__all__ if name.endswith("Error")]
    assert len(errors) == 17
    assert all(issubclass(error, tillsight.TillsightError) for error in errors)
    assert issubclass(tillsight.CalibrationError, tillsight.DataError)
    assert issubclass(tillsight.DownloadError, tillsight.FleetError)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="the converting side is installed")
def test_a_device_install_says_what_to_install_to_convert(tmp_path, photos, capsys):
    from tillsight import cli

    with pytest.raises(tillsight.BackendUnavailableError, match=r"pip install 'tillsight\[convert\]'"):
        tillsight.convert  # noqa: B018
    (tmp_path / "model.keras").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: reading it would need Keras
    argv = [
        "convert",
        str(tmp_path / "model.keras"),
        "--profile",
        "raspberry-pi-4",
        "--out",
        str(tmp_path / "out"),
        "--calibration",
        str(photos.train_list),
        "--labels",
        str(photos.labels_file),
    ]
    assert cli.main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: converting needs TensorFlow") and "tillsight[convert]" in error, error
    assert len(error.splitlines()) == 1 and not (tmp_path / "out").exists()
