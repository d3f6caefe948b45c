"""The one preprocessing function: resize modes, colour order, ranges, quantization."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import pytest

from tillsight.datasets import read_image
from tillsight.jsonfile import json_ready
from tillsight.preprocess import ColorOrder, InputRange, InputSpec, preprocess, quantize
from tillsight.profiles import ResizeMode


def banded(height: int, width: int) -> np.ndarray:
    """Blue left third, green middle, red right third (BGR)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 3] = (255, 0, 0)
    image[:, width // 3 : 2 * width // 3] = (0, 255, 0)
    image[:, 2 * width // 3 :] = (0, 0, 255)
    return image


def test_center_crop_keeps_the_middle_of_a_wide_frame():
    out = preprocess(banded(300, 900), InputSpec(32, 32, color_order=ColorOrder.BGR))
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert np.all(out[..., 1] == 255) and np.all(out[..., 0] == 0) and np.all(out[..., 2] == 0)


def test_a_crop_fraction_keeps_the_centre_of_each_side_in_every_resize_mode():
    frame = banded(300, 900)  # thirds of 300 px: a 0.3 crop keeps 270 px of the green middle
    for mode in ResizeMode:
        out = preprocess(frame, InputSpec(16, 16, color_order=ColorOrder.BGR, resize=mode, crop=0.3))
        content = out[out.sum(axis=-1) > 0]  # letterbox pads with black
        assert np.all(content[:, 1] == 255) and np.all(content[:, [0, 2]] == 0), mode
    square = np.zeros((256, 256, 3), np.uint8)
    square[16:240, 16:240] = 200  # a 224 px centre inside a 16 px border: crop 0.875 sees the centre alone
    assert np.all(preprocess(square, InputSpec(224, 224, crop=0.875)) == 200)
    assert preprocess(square, InputSpec(224, 224)).min() < 200
    spec = InputSpec(224, 224, crop=0.875)
    assert msgspec.convert(json_ready(spec), InputSpec) == spec  # as a manifest writes and reads it
    old_manifest = {k: v for k, v in json_ready(spec).items() if k != "crop"}  # bundles from before the crop field
    assert msgspec.convert(old_manifest, InputSpec).crop == 1.0
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="crop must be a fraction"):
            InputSpec(8, 8, crop=bad)


def test_stretch_keeps_everything_and_letterbox_pads():
    stretched = preprocess(banded(300, 900), InputSpec(30, 30, color_order=ColorOrder.BGR, resize=ResizeMode.STRETCH))
    assert stretched[0, 0, 0] == 255 and stretched[0, -1, 2] == 255
    boxed = preprocess(banded(300, 900), InputSpec(30, 30, color_order=ColorOrder.BGR, resize=ResizeMode.LETTERBOX))
    assert np.all(boxed[:10] == 0) and np.all(boxed[-10:] == 0)  # 3:1 frame -> 10 rows of content
    assert boxed[15, 0, 0] == 255 and boxed[15, -1, 2] == 255


def test_colour_order_and_value_ranges():
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 0] = 255
    rgb = preprocess(blue, InputSpec(8, 8))
    assert np.all(rgb[..., 2] == 255) and np.all(rgb[..., 0] == 0)
    mean, std = InputRange.SYMMETRIC.mean_std()
    symmetric = preprocess(blue, InputSpec(8, 8, mean=mean, std=std))
    assert np.allclose(symmetric[..., 2], 1.0) and np.allclose(symmetric[..., 0], -1.0)
    mean, std = InputRange.UNIT.mean_std()
    assert np.allclose(preprocess(blue, InputSpec(8, 8, mean=mean, std=std)).max(), 1.0)


def test_quantize_matches_the_tensor_formula_and_clips():
    values = np.array([-2.0, 0.0, 0.5, 1.0, 10.0], np.float32)
    q = quantize(values, "uint8", scale=1 / 127.5, zero_point=128)
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 128, 192, 255, 255]  # round(x / scale + zero point), clipped to 0..255
    q8 = quantize(values, "int8", scale=1 / 127.5, zero_point=0)
    assert q8.tolist() == [-128, 0, 64, 127, 127]
    as_float = quantize(values.astype(np.float64), "float32", 0.0, 0)
    assert as_float.dtype == np.float32 and as_float.tolist() == values.tolist()  # float models take the values as they are


def test_real_photo_and_bad_inputs(grocery):
    photo = read_image(next((grocery / "train" / "Fruit" / "Banana").glob("*.jpg")))
    out = preprocess(photo, InputSpec(224, 160))
    assert out.shape == (224, 160, 3) and 0 <= out.min() and out.max() <= 255
    gray = preprocess(photo[..., 0], InputSpec(16, 16))
    assert np.all(gray[..., 0] == gray[..., 1])
    with pytest.raises(ValueError, match="uint8"):
        preprocess(photo.astype(np.float32), InputSpec(16, 16))
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.zeros((4, 4, 2), np.uint8), InputSpec(16, 16))


def test_input_spec_round_trips_through_the_manifest_form():
    spec = InputSpec(96, 128, ColorOrder.BGR, ResizeMode.LETTERBOX, (1, 2, 3), (4, 5, 6), "int8", 0.5, -3)
    assert msgspec.convert(json_ready(spec), InputSpec) == spec


@pytest.mark.parametrize("color_order", ["rgb", "bgr"])
def test_model_input_fast_path_equals_preprocess_then_quantize(photos, color_order):
    from tillsight.datasets import read_image
    from tillsight.preprocess import ColorOrder, model_input, preprocess, quantize

    identity = InputSpec(height=64, width=48, color_order=ColorOrder(color_order), dtype="uint8", scale=1.0, zero_point=0)
    scaled = InputSpec(height=64, width=48, color_order=ColorOrder(color_order), dtype="uint8", scale=0.02, zero_point=3)
    for path, _ in photos.eval_items[:8]:
        image = read_image(path)
        for spec in (identity, scaled):
            expected = quantize(preprocess(image, spec), spec.dtype, spec.scale, spec.zero_point)
            got = model_input(image, spec)
            assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("resize", ["center-crop", "stretch"])
@pytest.mark.parametrize("crop", [1.0, 0.875])
def test_input_region_is_the_part_of_the_frame_the_model_sees(resize, crop):
    from tillsight.preprocess import input_region, model_pixels

    spec = InputSpec(height=96, width=128, resize=ResizeMode(resize), crop=crop)
    frame = np.random.default_rng(1).integers(0, 255, (301, 517, 3), dtype=np.uint8)
    left, top, right, bottom = input_region(spec, 517, 301)
    stretched = dataclasses.replace(spec, resize=ResizeMode.STRETCH, crop=1.0)
    assert np.array_equal(model_pixels(frame[top:bottom, left:right], stretched), model_pixels(frame, spec))
