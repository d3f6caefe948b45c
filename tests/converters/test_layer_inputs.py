"""What weight layers see on calibration photos: their input patches, and the walk that visits them in graph order."""

from __future__ import annotations

import numpy as np
import pytest

from ..conftest import load_photos, requires_keras

pytestmark = [requires_keras]


@pytest.fixture(scope="module")
def inputs(photos) -> np.ndarray:
    """Eight real photos, scaled to [0, 1], with an odd width so "same" padding is uneven."""
    return load_photos(photos.eval_items[:8])[0][:, :, :63] / 255.0


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_patches_times_the_kernel_are_the_layers_outputs(kind, kernel, strides, padding, inputs):
    import keras

    from tillsight.converters.layer_inputs import output_positions, patches

    keras.utils.set_random_seed(0)
    if kind == "conv":
        layer = keras.layers.Conv2D(8, kernel, strides=strides, padding=padding)
    else:
        layer = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding=padding)
    outputs = np.asarray(layer(inputs)).reshape(-1, 8 if kind == "conv" else 3)
    rows = patches(layer, inputs)
    if kind == "conv":
        computed = rows @ np.asarray(layer.kernel).reshape(-1, 8)
    else:  # [channels, kh * kw, positions] with one kernel column per channel
        computed = np.einsum("ckp,kc->pc", rows, np.asarray(layer.kernel)[..., 0].reshape(-1, 3))
    np.testing.assert_allclose(computed + np.asarray(layer.bias), outputs, atol=1e-4)
    assert output_positions(layer, inputs.shape) == len(outputs)
    some = np.array([0, 5, len(outputs) - 1])
    chosen = patches(layer, inputs, some)
    np.testing.assert_array_equal(chosen, rows[some] if kind == "conv" else rows[..., some])


def test_the_walk_visits_nested_layers_in_order_on_the_model_as_visits_left_it(inputs):
    import keras

    from tillsight.converters.layer_inputs import walk

    keras.utils.set_random_seed(0)
    base_input = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(6, 3, activation="relu", name="first")(base_input)
    base = keras.Model(base_input, keras.layers.DepthwiseConv2D(3, name="second")(y), name="base")
    model_input = keras.Input(inputs.shape[1:])
    x = keras.layers.GlobalAveragePooling2D()(base(model_input))
    model = keras.Model(model_input, keras.layers.Dense(4, name="third")(x))
    reference = keras.models.clone_model(model, recursive=True)
    reference.set_weights(model.get_weights())
    seen: list[tuple[str, float, float]] = []

    def visit(found) -> None:
        current, original = next(found.batches())
        seen.append((found.layer.name, float(np.abs(current).max()), float(np.abs(original).max())))
        assert found.reference.name == found.layer.name
        if found.layer.name == "first":  # everything after it now sees zeros; the reference does not
            found.layer.kernel.assign(np.zeros(found.layer.kernel.shape))
            found.layer.bias.assign(np.zeros(found.layer.bias.shape))

    walk(model, inputs, visit, reference=reference)
    assert [name for name, _, _ in seen] == ["first", "second", "third"]
    assert seen[0][1] == seen[0][2] > 0  # the first layer sees the photos, in both models
    assert seen[1][1] == 0 < seen[1][2]
    assert seen[2][1] == 0 < seen[2][2]
