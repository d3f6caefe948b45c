"""Device profiles: shipped files, validation messages, user files."""

from __future__ import annotations

from importlib import resources

import pytest

from tillsight import ProfileError, list_profiles, load_profile
from tillsight.jsonfile import json_ready
from tillsight.profiles import BackendKind, IODtype, ResizeMode

from .conftest import REQUIRED_PROFILES as REQUIRED


def shipped_text(name: str) -> str:
    return resources.files("tillsight.device_profiles").joinpath(f"{name}.toml").read_text()


def test_required_profiles_ship_and_validate():
    profiles = {p.name: p for p in list_profiles()}
    assert REQUIRED <= set(profiles)
    pi4 = profiles["raspberry-pi-4"]
    assert (pi4.backend, pi4.threads, pi4.max_top1_drop) == (BackendKind.TFLITE, 4, 1.0)
    assert pi4.input.io_dtype is IODtype.UINT8 and pi4.quantization.per_channel
    assert pi4.quantization.calibration_images >= 200
    assert profiles["coral-usb"].backend is BackendKind.EDGETPU and profiles["coral-usb"].backend_fallbacks == (
        BackendKind.TFLITE,
    )
    assert profiles["intel-nuc-iris-xe"].backend is BackendKind.OPENVINO


def test_user_profile_file_by_path(tmp_path):
    path = tmp_path / "kiosk-7.toml"
    path.write_text(shipped_text("raspberry-pi-4").replace('resize = "center-crop"', 'resize = "letterbox"'))
    profile = load_profile(str(path))
    assert profile.name == "kiosk-7" and profile.input.resize is ResizeMode.LETTERBOX
    assert json_ready(profile)["input"]["resize"] == "letterbox"  # as a manifest records the profile


def test_a_profile_with_the_old_fallbacks_key_still_loads(tmp_path):
    path = tmp_path / "old-coral.toml"
    text = shipped_text("coral-usb")
    assert 'backend_fallbacks = ["tflite"]' in text
    path.write_text(text.replace("backend_fallbacks = ", "fallbacks = "))
    assert load_profile(path).backend_fallbacks == (BackendKind.TFLITE,)


def test_a_profile_with_the_old_calibration_sample_keys_still_loads_and_both_names_are_refused(tmp_path):
    path = tmp_path / "old-pi.toml"
    text = shipped_text("raspberry-pi-4")
    assert "calibration_images = 300" in text and "min_calibration_images = 100" in text
    path.write_text(
        text.replace("calibration_images = 300", "calibration_samples = 250").replace(
            "min_calibration_images", "min_calibration_samples"
        )
    )
    quantization = load_profile(path).quantization
    assert (quantization.calibration_images, quantization.min_calibration_images) == (250, 100)
    path.write_text(text.replace("calibration_images = 300", "calibration_images = 300\ncalibration_samples = 250"))
    with pytest.raises(
        ProfileError, match=r"'quantization.calibration_samples' is the old name of 'quantization.calibration_images'"
    ):
        load_profile(path)


def test_a_profile_with_the_old_pruning_target_key_still_loads_as_its_fraction(tmp_path):
    path = tmp_path / "old-pi.toml"
    text = shipped_text("raspberry-pi-4")
    assert "\nfraction = 0.0" in text
    path.write_text(text.replace("\nfraction = 0.0", "\ntarget = 0.3"))
    assert load_profile(path).pruning.fraction == 0.3
    path.write_text(text.replace("\nfraction = 0.0", "\nfraction = 0.2\ntarget = 0.3"))
    with pytest.raises(ProfileError, match=r"'pruning.target' is the old name of 'pruning.fraction'"):
        load_profile(path)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("threads = 4", "threads = 4\ncolour = 1"),
            "unknown key 'colour' (allowed: backend, backend_fallbacks, budgets, description",
        ),
        (
            ('resize = "center-crop"', 'resize = "fill"'),
            "'input.resize' = 'fill' is not allowed (allowed: center-crop, stretch, letterbox)",
        ),
        (('io_dtype = "uint8"', 'io_dtype = "float"'), "(allowed: uint8, int8)"),
        (('backend = "tflite"', 'backend = "onnx"'), "'backend' = 'onnx' is not allowed (allowed: tflite, edgetpu, openvino)"),
        (("threads = 4", 'threads = "four"'), "'threads' must be an integer"),
        (("per_channel = true", "per_channel = 1"), "'quantization.per_channel' must be true or false"),
        (("max_top1_drop = 1.0", "max_top1_drop = -1.0"), "'max_top1_drop' must not be negative"),
        (("[pruning]", "[pruning]\nratio = 0.5"), "unknown key 'pruning.ratio'"),
        (("calibration_images = 300", "calibration_images = 10"), "min_calibration_images"),
        (("threads = 4", "threads = [4"), "invalid TOML"),
        (("crop = 1.0", "crop = 1.2"), "'input.crop' must be a fraction in (0, 1], got 1.2"),
        (('description = "Raspberry', 'describe = "Raspberry'), "unknown key 'describe'"),
        (("backend_fallbacks = []", "backend_fallbacks = []\nfallbacks = []"), "keep only the latter"),
        (
            ("[pruning]", "[openvino]\nint8_weight_bits = 9\n\n[pruning]"),
            "'openvino.int8_weight_bits' = 9 is not allowed (allowed: 7, 8)",
        ),
    ],
)
def test_bad_profile_names_file_key_and_allowed_values(tmp_path, edit, expected):
    path = tmp_path / "bad.toml"
    text = shipped_text("raspberry-pi-4")
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_unknown_name_lists_shipped_profiles():
    with pytest.raises(ProfileError, match="unknown profile 'pi-4'.*raspberry-pi-4"):
        load_profile("pi-4")
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile("missing/kiosk.toml")


def test_an_input_range_gives_mean_and_std_in_one_place():
    """The CLI, the samples and the API all turn --input-range into a mean and std through ConversionOptions."""
    import tillsight

    options = tillsight.ConversionOptions.for_profile("raspberry-pi-4", input_range="-1-1", prune="channels:0.3")
    assert options.mean == (127.5,) * 3 and options.std == (127.5,) * 3 and options.pruning.fraction == 0.3
    assert tillsight.ConversionOptions.from_input_range("0-1").std == (255.0,) * 3
    assert tillsight.ConversionOptions.from_input_range(None, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0)).mean == (1.0, 2.0, 3.0)
    with pytest.raises(tillsight.OptionsError, match="not both"):
        tillsight.ConversionOptions.for_profile("raspberry-pi-4", input_range="0-1", mean=(0.0,) * 3, std=(1.0,) * 3)
    with pytest.raises(tillsight.OptionsError, match="none of 0-255, 0-1, -1-1"):
        tillsight.ConversionOptions.from_input_range("0-2")
