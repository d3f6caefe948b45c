"""Pruning on Keras 3: magnitude masks and their schedule, channel groups and the rebuilt model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SIZE, PhotoSplit, build_tiny_classifier, load_photos, requires_keras, requires_nncf


def _eval_inputs(photos: PhotoSplit, count: int = 12) -> np.ndarray:
    inputs, _, _ = load_photos(photos.eval_items[:count])
    return inputs


def _train_inputs(photos: PhotoSplit, count: int) -> np.ndarray:
    lines = photos.train_list.read_text().splitlines()[:count]
    inputs, _, _ = load_photos([(Path(line.split(",")[0]), int(line.split(",")[1])) for line in lines])
    return inputs


def _randomize_batchnorm(model) -> None:
    """Give BatchNorm layers non-trivial statistics, as a trained model has."""
    import keras

    rng = np.random.default_rng(1)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (np.asarray(w) for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.2, beta.shape),
                    rng.normal(0, 0.2, mean.shape),
                    rng.uniform(0.5, 2.0, variance.shape),
                ]
            )


def build_blocks_model(num_classes: int = 4):
    """Inverted residual blocks (expand, depthwise, project, add) and a squeeze-and-excitation gate."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    for _ in range(2):  # two residual blocks: their outputs are tied to the stem by the adds
        shortcut = x
        y = layers.Conv2D(32, 1, use_bias=False)(x)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU(6.0)(y)
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.Activation("swish")(y)
        gate = layers.GlobalAveragePooling2D()(y)
        gate = layers.Reshape((1, 1, 32))(gate)
        gate = layers.Conv2D(8, 1, activation="relu")(gate)
        gate = layers.Conv2D(32, 1, activation="sigmoid")(gate)
        y = layers.Multiply()([y, gate])
        y = layers.Conv2D(16, 1, use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        x = layers.Add()([shortcut, y])
    x = layers.SeparableConv2D(24, 3, strides=2, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    _randomize_batchnorm(model)
    return model


def reference_with_removed_inputs_zeroed(plan):
    """The original model, but every consumer ignores the removed channels: what the pruned model must compute."""
    import keras

    reference = keras.models.clone_model(plan.model, recursive=True)
    reference.set_weights(plan.model.get_weights())
    by_name = {layer.name: layer for layer in reference._flatten_layers(include_self=False, recursive=True)}
    for group in plan.prunable:
        removed = np.setdiff1d(np.arange(group.size), group.keep)
        for consumer in group.consumers:
            layer = by_name[consumer.name]
            weights = layer.get_weights()
            for variable, values in zip(layer.weights, weights, strict=True):
                if variable.name in ("kernel", "depthwise_kernel"):  # input channels are the second-last axis
                    values[..., removed, :] = 0.0
            layer.set_weights(weights)
    return reference


# ---- unstructured: schedule and masks -------------------------------------------------------------


@requires_keras
def test_schedule_rises_polynomially_to_the_target_and_holds_it():
    from tillsight.converters.pruning.magnitude import SparsitySchedule

    schedule = SparsitySchedule.for_training(0.5, total_steps=90)
    values = [schedule.sparsity_at(step) for step in range(91)]
    assert values[0] == 0.0
    assert all(b >= a for a, b in zip(values[:-1], values[1:], strict=True))
    assert values[schedule.end_step] == 0.5 and values[-1] == 0.5
    assert schedule.end_step == 60  # two thirds of the steps, then the masks stay fixed
    assert values[30] > 0.5 * 0.8  # polynomial decay: most of the sparsity comes early
    updates = [step for step in range(91) if schedule.updates_at(step)]
    assert updates[0] == 0 and updates[-1] == schedule.end_step


@pytest.mark.integration  # trains three epochs
@requires_keras
def test_masks_hold_through_training_and_strip_leaves_a_plain_model(photos: PhotoSplit):
    import keras

    from tillsight.converters.pruning.magnitude import MagnitudePruner, SparsitySchedule, _Mask, sparsity_report
    from tillsight.converters.training import TrainingSchedule, fine_tune, load_training_photos
    from tillsight.datasets import read_image_set
    from tillsight.preprocess import InputSpec

    model = build_tiny_classifier()
    training = load_training_photos(read_image_set(photos.train_list, photos.labels), InputSpec(SIZE, SIZE), 4)
    steps = 3 * training.steps_per_epoch()
    schedule = SparsitySchedule.for_training(0.6, steps)
    pruner = MagnitudePruner(model, schedule)
    snapshots: dict[str, np.ndarray] = {}

    class Snapshot(keras.callbacks.Callback):
        step = 0

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step == schedule.end_step + 1:  # masks final from here on
                snapshots.update({name: np.asarray(kernel.numpy()).copy() for name, kernel in pruner.kernels})

    fine_tune(model, training, "softmax", TrainingSchedule(3, 1e-3, callbacks=[pruner.callback(), Snapshot()]))
    assert snapshots, "the schedule's end step was never reached"
    moved = 0
    for name, kernel in pruner.kernels:
        final = np.asarray(kernel.numpy())
        masked = snapshots[name] == 0
        assert np.mean(masked) == pytest.approx(0.6, abs=0.01), name
        assert np.all(final[masked] == 0.0), f"{name}: pruned weights came back during training"
        moved += int(np.count_nonzero(final[~masked] != snapshots[name][~masked]))
    assert moved > 0, "training did not change the kept weights: the check above proves nothing"
    pruner.strip()
    assert not any(isinstance(kernel.constraint, _Mask) for _, kernel in pruner.kernels)
    report = sparsity_report(model)
    assert report["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert set(report["per_kernel"]) == {name for name, _ in pruner.kernels}
    assert len(report["per_kernel"]) == 4  # three convolutions and the classifier


@requires_keras
def test_one_shot_magnitude_pruning_zeroes_the_smallest_weights():
    from tillsight.converters.pruning.magnitude import MagnitudePruner, SparsitySchedule

    model = build_tiny_classifier()
    before = {
        name: np.asarray(kernel.numpy()).copy() for name, kernel in MagnitudePruner(model, SparsitySchedule(0.3, 0)).kernels
    }
    pruner = MagnitudePruner(model, SparsitySchedule(0.3, 0))
    pruner.set_sparsity(0.3)
    pruner.strip()
    for name, kernel in pruner.kernels:
        after, original = np.asarray(kernel.numpy()), before[name]
        zeroed = after == 0
        assert np.mean(zeroed) == pytest.approx(0.3, abs=0.01)
        assert np.abs(original[zeroed]).max() <= np.abs(original[~zeroed]).min()  # by magnitude
        np.testing.assert_array_equal(after[~zeroed], original[~zeroed])


# ---- channels: groups, rebuild, reference ---------------------------------------------------------


@requires_keras
def test_channel_pruning_of_residual_depthwise_se_model_matches_the_reference(photos: PhotoSplit):
    from tillsight.converters.pruning.channel_choice import choose_channels
    from tillsight.converters.pruning.channels import count_macs, plan_channels
    from tillsight.converters.pruning.rebuild import apply_plan
    from tillsight.profiles import ChannelCriterion, PruningScope

    model = build_blocks_model()
    plan = plan_channels(model)
    by_producer = {group.name: group for group in plan.prunable}
    # the stem and both block projections are tied by the adds: one group of 16 channels
    residual = next(group for group in plan.prunable if len(group.producers) == 3)
    assert residual.size == 16 and len(plan.prunable) == 6  # residual, 2 expansions, 2 SE reductions, separable
    assert any(name.startswith("separable") for name in by_producer)
    choose_channels(plan, 0.5, PruningScope.LAYER, ChannelCriterion.L1)
    pruned = apply_plan(plan)
    assert all(group.kept == group.size - round(0.5 * group.size) for group in plan.prunable)
    assert pruned.count_params() < 0.5 * model.count_params()
    assert count_macs(pruned) < 0.4 * count_macs(model)

    inputs = _eval_inputs(photos)
    expected = reference_with_removed_inputs_zeroed(plan).predict(inputs, verbose=0)
    np.testing.assert_allclose(pruned.predict(inputs, verbose=0), expected, atol=1e-5)
    original = model.predict(inputs, verbose=0)
    assert np.abs(original - expected).max() > 1e-3, "removing channels changed nothing: the comparison proves nothing"


@requires_keras
def test_channel_ranking_by_l1_keeps_the_strongest_filters():
    import keras

    from tillsight.converters.pruning.channel_choice import choose_channels
    from tillsight.converters.pruning.channels import plan_channels
    from tillsight.profiles import ChannelCriterion, PruningScope

    model = build_tiny_classifier()
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = np.asarray(first_conv.kernel.numpy())
    kernel[..., [3, 7]] *= 0.01  # two nearly dead filters
    first_conv.kernel.assign(kernel)
    plan = plan_channels(model)
    choose_channels(plan, 2 / 16, PruningScope.LAYER, ChannelCriterion.L1)
    group = next(g for g in plan.prunable if first_conv in g.producers)
    assert 3 not in group.keep and 7 not in group.keep and len(group.keep) == 14


@requires_keras
def test_global_scope_removes_the_fraction_overall_and_never_empties_a_layer():
    from tillsight.converters.pruning.channel_choice import choose_channels
    from tillsight.converters.pruning.channels import plan_channels
    from tillsight.profiles import ChannelCriterion, PruningScope

    model = build_blocks_model()
    plan = plan_channels(model)
    choose_channels(plan, 0.4, PruningScope.GLOBAL, ChannelCriterion.BN_GAMMA)
    report = plan.report()
    assert report["removed_fraction"] == pytest.approx(0.4, abs=0.05)
    assert all(group.kept >= 1 for group in plan.prunable)
    assert len({round(group.kept / group.size, 2) for group in plan.prunable}) > 1  # not the same share everywhere


@requires_keras
def test_removed_channels_are_made_up_for_by_refitting_the_next_layer(photos: PhotoSplit):
    """With one expansion pruned, its 1x1 projection is refit: each channel's mean after it stays, and its outputs stay closer."""
    import keras

    from tillsight.converters.pruning.channels import plan_channels
    from tillsight.converters.pruning.compensation import consumer_moments, removal_weights, weights_applied
    from tillsight.converters.pruning.rebuild import apply_plan

    model = build_blocks_model()
    inputs = _eval_inputs(photos)
    plan = plan_channels(model)
    expansion = next(
        g
        for g in plan.prunable
        if g.size == 32 and any(isinstance(c, keras.layers.Conv2D) and c.filters == 16 for c in g.consumers)
    )
    expansion.keep = np.arange(0, 32, 2)  # half the channels, whatever their strength
    projection = next(c for c in expansion.consumers if c.filters == 16)
    bn = next(
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.input is projection.output
    )
    weights = removal_weights(plan, [expansion], consumer_moments(plan, inputs))

    def bn_outputs(candidate) -> np.ndarray:
        values = keras.Model(candidate.inputs, candidate.get_layer(bn.name).output).predict(inputs, verbose=0)
        return values.reshape(-1, values.shape[-1])

    original = bn_outputs(model)
    refit, zeroed = bn_outputs(apply_plan(plan, weights)), bn_outputs(apply_plan(plan))
    np.testing.assert_allclose(refit.mean(axis=0), original.mean(axis=0), atol=1e-3)  # the constant input refits each mean
    assert np.abs(zeroed.mean(axis=0) - original.mean(axis=0)).max() > 1e-2, "removal moved no mean: the check proves nothing"
    assert np.square(refit - original).mean() < 0.5 * np.square(zeroed - original).mean()
    with weights_applied(weights):  # the full-size model with these weights computes what the pruned one does
        expected = model.predict(inputs, verbose=0)
    np.testing.assert_allclose(apply_plan(plan, weights).predict(inputs, verbose=0), expected, atol=1e-5)
    assert np.abs(model.predict(inputs, verbose=0) - expected).max() > 1e-4  # and its own weights came back


def _two_group_model():
    """Conv A (16) -> conv B (16) -> Dense; the Dense ignores 12 of B's channels, whose filters are also weak."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="conv_a")(inputs)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="conv_b")(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(4, activation="softmax", name="scores")(x))
    kernel, bias = model.get_layer("conv_b").get_weights()
    kernel[..., 4:] *= 0.3
    model.get_layer("conv_b").set_weights([kernel, bias])
    kernel, bias = model.get_layer("scores").get_weights()
    kernel[4:] *= 1e-3
    model.get_layer("scores").set_weights([kernel, bias * 0])
    return model


@requires_keras
def test_measured_scope_takes_channels_where_the_outputs_change_least(photos: PhotoSplit, caplog):
    import dataclasses

    from tillsight.bundle import OutputActivation
    from tillsight.converters.pruning import prune
    from tillsight.profiles import ChannelCriterion, PruningOptions, PruningScope

    model = _two_group_model()
    inputs = _eval_inputs(photos) / 255.0
    # ranked by filter L1, so the scope alone decides where the channels go
    base = PruningOptions.from_spec(
        "channels:0.5", base=PruningOptions(finetune_epochs=0, channel_multiple=1, criterion=ChannelCriterion.L1)
    )
    results = {
        scope: prune(model, dataclasses.replace(base, scope=scope), None, OutputActivation.SOFTMAX, images=inputs)
        for scope in (PruningScope.LAYER, PruningScope.MEASURED)
    }
    layer, measured = (results[scope].report for scope in (PruningScope.LAYER, PruningScope.MEASURED))
    assert measured["scope"] == "measured" and measured["choice"]["trials"] > 0
    assert measured["macs_after"] <= layer["macs_after"]  # at least as fast as the same share from every group
    assert measured["per_group"]["conv_b"][1] < measured["per_group"]["conv_a"][1]  # B's weak channels went first
    original = model.predict(inputs, verbose=0)
    change = {scope: np.abs(results[scope].model.predict(inputs, verbose=0) - original).mean() for scope in results}
    assert change[PruningScope.MEASURED] < 0.5 * change[PruningScope.LAYER]
    no_images = prune(model, dataclasses.replace(base, scope=PruningScope.MEASURED), None, OutputActivation.SOFTMAX)
    assert no_images.report["scope"] == "layer"  # nothing to try choices on: the same share everywhere

    # past the deepest level every group may reach, the shortfall is said, not hidden
    deep = dataclasses.replace(base, scope=PruningScope.MEASURED, fraction=0.9)
    assert not any("every group is at its most" in r.message for r in caplog.records)
    short = prune(model, deep, None, OutputActivation.SOFTMAX, images=inputs).report
    deep_layer = prune(model, dataclasses.replace(deep, scope=PruningScope.LAYER), None, OutputActivation.SOFTMAX).report
    assert short["macs_after"] > deep_layer["macs_after"]
    assert any("channels 90%: every group is at its most" in r.message for r in caplog.records)


@requires_keras
def test_reconstruction_criterion_removes_channels_the_others_can_stand_in_for(photos: PhotoSplit):
    """Channels 0-7 are unique with small filters; 8-11 copy 12-15. Half must go: L1 removes the unique ones and
    keeps four functions twice, the reconstruction criterion removes copies, which the refit next layer reads anyway."""
    import keras

    from tillsight.converters.pruning.channel_choice import choose_channels
    from tillsight.converters.pruning.channels import plan_channels
    from tillsight.converters.pruning.compensation import consumer_moments, elimination_order, removal_weights
    from tillsight.converters.pruning.rebuild import apply_plan
    from tillsight.profiles import ChannelCriterion, PruningScope

    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv_a")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 1, name="conv_b")(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    kernel, bias = model.get_layer("conv_a").get_weights()
    kernel[..., :8], bias[:8] = 0.5 * kernel[..., :8], 0.5 * bias[:8]
    kernel[..., 8:12], bias[8:12] = kernel[..., 12:], bias[12:]
    model.get_layer("conv_a").set_weights([kernel, bias])
    images = _eval_inputs(photos)
    plan = plan_channels(model)
    group = next(g for g in plan.prunable if g.name == "conv_a")
    moments = consumer_moments(plan, images)
    orders = {id(group): elimination_order(group, moments)}
    results = {}
    for criterion in (ChannelCriterion.L1, ChannelCriterion.RECONSTRUCTION):
        choose_channels(plan, 0.5, PruningScope.LAYER, criterion, 1, orders)
        for other in plan.prunable:  # conv_a's channels only
            other.keep = other.keep if other is group else None
        results[criterion] = (group.keep.copy(), apply_plan(plan, removal_weights(plan, [group], moments)))
        group.keep = None
    assert sorted(results[ChannelCriterion.L1][0]) == list(range(8, 16))  # the larger filters, four functions twice
    kept = set(results[ChannelCriterion.RECONSTRUCTION][0].tolist())
    assert not any({copy, copy + 4} <= kept for copy in range(8, 12)), kept  # never both of a pair
    probe = {c: keras.Model(m.inputs, m.get_layer("conv_b").output) for c, (_, m) in results.items()}
    original = keras.Model(model.inputs, model.get_layer("conv_b").output).predict(images, verbose=0)
    error = {c: np.square(p.predict(images, verbose=0) - original).mean() for c, p in probe.items()}
    assert error[ChannelCriterion.RECONSTRUCTION] < 0.5 * error[ChannelCriterion.L1], error


def _wide_conv_model(seed: int):
    """``Rescaling -> conv0 (3x3, 64) -> conv_wide (1x1, 64) -> pooling -> scores (Dense 4)``, seeded."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv0")(
        keras.layers.Rescaling(1 / 255)(inputs)
    )
    x = keras.layers.Conv2D(64, 1, activation="relu", name="conv_wide")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="scores")(keras.layers.GlobalAveragePooling2D()(x)))


@requires_keras
def test_measured_unstructured_scope_puts_zeros_where_the_outputs_change_least(photos: PhotoSplit):
    """conv_wide reads 32 channels twice over (zeros there are free once compensated); the classifier reads each
    feature once. The measured scope zeroes conv_wide more and moves the outputs less than the same share everywhere."""
    import dataclasses

    from tillsight.bundle import OutputActivation
    from tillsight.converters.pruning import prune
    from tillsight.profiles import PruningOptions, PruningScope

    model = _wide_conv_model(4)
    kernel, bias = model.get_layer("conv0").get_weights()
    kernel[..., 32:], bias[32:] = kernel[..., :32], bias[:32]
    model.get_layer("conv0").set_weights([kernel, bias])
    images = _train_inputs(photos, 160)  # 160 samples for the classifier's 64 inputs: enough to refit it
    base = PruningOptions.from_spec("unstructured:0.5", base=PruningOptions(finetune_epochs=0))
    original = model.predict(images, verbose=0)
    results = {
        scope: prune(model, dataclasses.replace(base, scope=scope), None, OutputActivation.SOFTMAX_ADDED, images=images)
        for scope in (PruningScope.LAYER, PruningScope.MEASURED)
    }
    shares = results[PruningScope.MEASURED].report["one_shot"]["layer_sparsity"]
    assert shares["conv_wide"] > shares["scores"], shares
    assert results[PruningScope.MEASURED].report["sparsity"] >= 0.5 - 1e-3
    change = {scope: np.square(r.model.predict(images, verbose=0) - original).mean() for scope, r in results.items()}
    assert change[PruningScope.MEASURED] < 0.5 * change[PruningScope.LAYER], change


@requires_keras
@pytest.mark.parametrize("fraction", [0.5, 0.62])
def test_a_layer_with_too_few_calibration_samples_loses_weights_only_when_the_target_needs_it(photos: PhotoSplit, fraction):
    """12 images give the classifier 12 samples for 64 inputs: a least-squares refit would fit those 12 images, not
    the layer. At 50% conv_wide (thousands of positions) can hold every zero, so the classifier stays exactly as it
    was; at 62% conv_wide at its most (90%) is not enough, so the classifier loses weights too and the target holds."""
    from tillsight.bundle import OutputActivation
    from tillsight.converters.pruning import prune
    from tillsight.profiles import PruningOptions

    model = _wide_conv_model(5)
    options = PruningOptions.from_spec(f"unstructured:{fraction}", base=PruningOptions(finetune_epochs=0))
    result = prune(model, options, None, OutputActivation.SOFTMAX_ADDED, images=_eval_inputs(photos, 12))
    assert result.report["sparsity"] == pytest.approx(fraction, abs=0.01)
    before, after = model.get_layer("scores").get_weights(), result.model.get_layer("scores").get_weights()
    if fraction == 0.5:
        for original, kept in zip(before, after, strict=True):
            np.testing.assert_array_equal(kept, original)
        assert result.report["one_shot"]["layer_sparsity"]["scores"] == 0.0
    else:
        assert 0 < result.report["one_shot"]["layer_sparsity"]["scores"] < 0.9
        assert np.count_nonzero(after[0] == 0) > 0


@requires_keras
def test_nested_base_model_is_pruned_inside():
    """Transfer learning's usual shape: a functional base model inside the classifier."""
    import keras

    from tillsight.converters.pruning.channel_choice import choose_channels
    from tillsight.converters.pruning.channels import plan_channels
    from tillsight.converters.pruning.rebuild import apply_plan
    from tillsight.profiles import ChannelCriterion, PruningScope

    keras.utils.set_random_seed(0)
    base_input = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(12, 3, strides=2, name="base_conv1")(base_input)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Conv2D(20, 3, strides=2, name="base_conv2")(y)
    base = keras.Model(base_input, y, name="base")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = base(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    plan = plan_channels(model)
    assert sorted(group.name for group in plan.prunable) == ["base_conv1", "base_conv2"]
    choose_channels(plan, 0.5, PruningScope.LAYER, ChannelCriterion.L1)
    pruned = apply_plan(plan)
    assert pruned.get_layer("base").get_layer("base_conv2").filters == 10
    assert pruned.get_layer("base").get_layer("base_conv1").filters == 6
    batch = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(
        pruned.predict(batch, verbose=0), reference_with_removed_inputs_zeroed(plan).predict(batch, verbose=0), atol=1e-4
    )


@requires_keras
def test_layers_that_mix_channels_freeze_their_groups():
    import keras

    from tillsight.converters.pruning.channels import plan_channels

    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(4, 3, name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, name="b")(inputs)
    x = keras.layers.Concatenate()([a, b])
    c = keras.layers.Conv2D(6, 3, name="c")(x)
    x = keras.layers.Flatten()(c)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    plan = plan_channels(model)
    assert plan.prunable == []
    reasons = {group.name: group.frozen_by for group in plan.groups}
    assert "Concatenate" in reasons["a"] and "Concatenate" in reasons["b"] and "Flatten" in reasons["c"]


@requires_keras
def test_channel_pruning_refuses_what_it_cannot_read():
    import keras

    from tillsight.converters.pruning import prune
    from tillsight.errors import ConversionError
    from tillsight.profiles import PruningOptions

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)
            self.head = keras.layers.Dense(2)

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    model = Subclassed()
    model(np.zeros((1, 16, 16, 3), "float32"))
    options = PruningOptions.from_spec("channels:0.5")
    with pytest.raises(ConversionError, match="subclassed Keras model.*unstructured pruning"):
        prune(model, options, None, "softmax")

    inputs = keras.Input((16, 16, 3))
    flat = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ConversionError, match="no channel .* can be removed .*Flatten"):
        prune(keras.Model(inputs, keras.layers.Dense(2)(flat)), options, None, "softmax")


def test_pruning_spec_parsing():
    from tillsight.profiles import PruningMode, PruningOptions

    assert PruningOptions.from_spec("channels:0.3").mode is PruningMode.CHANNELS
    assert PruningOptions.from_spec("Unstructured:0.5").fraction == 0.5
    assert not PruningOptions.from_spec("none").enabled
    base = PruningOptions(finetune_epochs=7)
    assert PruningOptions.from_spec("channels:0.2", base=base).finetune_epochs == 7
    # unset: each mode's own (channels recover over epochs; compensated unstructured needs none); 0 stays 0
    assert PruningOptions.from_spec("channels:0.3").epochs == 8 and PruningOptions.from_spec("unstructured:0.5").epochs == 0
    assert PruningOptions.from_spec("channels:0.3", base=PruningOptions(finetune_epochs=0)).epochs == 0
    # a larger cut trains longer by default (16 epochs at half the channels), a set count stays as it is
    assert [PruningOptions.from_spec(f"channels:{f}").epochs for f in (0.2, 0.4, 0.5, 0.7)] == [8, 12, 16, 24]
    assert PruningOptions.from_spec("channels:0.5", base=PruningOptions(finetune_epochs=3)).epochs == 3
    for bad in ("channels", "channels:1.5", "magic:0.3", "channels:x"):
        with pytest.raises(ValueError, match="channels:0.3"):
            PruningOptions.from_spec(bad)


@requires_keras
def test_model_is_left_unchanged(photos: PhotoSplit):
    from tillsight.converters.pruning import prune
    from tillsight.profiles import PruningOptions

    model = build_blocks_model()
    weights = [w.copy() for w in model.get_weights()]
    images = _eval_inputs(photos)  # the measured scope tries its choices on the model itself, then restores it
    for spec in ("channels:0.5", "unstructured:0.5"):
        options = PruningOptions.from_spec(spec, base=PruningOptions(finetune_epochs=0))
        result = prune(model, options, None, "softmax", images=images)
        assert result.model is not model
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def _write_profile(folder: Path, photos: PhotoSplit, pruning: str) -> Path:
    """generic-x86-cpu with a [pruning] table of its own and a one-photo accuracy tolerance."""
    from tests.conftest import one_photo_tolerance

    path = one_photo_tolerance("generic-x86-cpu", folder, photos)
    text = path.read_text()
    start = text.index("[pruning]")
    end = text.index("[", start + 1)
    path.write_text(text[:start] + "[pruning]\n" + pruning + "\n\n" + text[end:])
    return path


# ---- round trips through tillsight.convert and the CLI ---------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("spec", ["channels:0.5", "unstructured:0.5"])
def test_prune_convert_load_classify_round_trip(spec, tiny_model_file, photos: PhotoSplit, tmp_path: Path):
    import tillsight
    from tillsight.datasets import read_image

    profile = _write_profile(tmp_path, photos, 'mode = "none"')
    pruning = tillsight.PruningOptions.from_spec(spec, base=tillsight.PruningOptions(finetune_epochs=4, learning_rate=1e-3))
    bundle = tillsight.convert(
        tiny_model_file,
        profile,
        calibration=photos.train_list,
        evaluation=photos.eval_list,
        labels=photos.labels_file,
        out=tmp_path / "out",
        finetune=photos.train_list,
        options=tillsight.ConversionOptions(pruning=pruning, allow_accuracy_drop=True),
    )
    metrics = bundle.manifest.metrics
    report, accuracy = metrics.pruning, metrics.accuracy
    assert bundle.manifest.profile.pruning.mode.value == spec.split(":")[0]
    assert report.finetune.epochs == 4 and len(report.finetune.loss) == 4
    assert accuracy.float_to_pruned_drop == pytest.approx(accuracy.float_top1 - accuracy.pruned_top1, abs=1e-3)
    assert accuracy.pruned_to_converted_drop == pytest.approx(accuracy.pruned_top1 - accuracy.converted_top1, abs=1e-3)
    rounding = bundle.manifest.quantization["weight_rounding"]["method"]
    if spec.startswith("channels"):
        assert report.kept_channels < report.prunable_channels
        assert report.macs_after < 0.5 * report.macs_before
        assert rounding == "gptq"
    else:
        assert report.sparsity == pytest.approx(0.5, abs=0.01)
        assert report.gzip_bytes < report.gzip_bytes_unpruned
        assert rounding == "nearest"  # compensated rounding lowered the int8 accuracy of unstructured-pruned models

    correct = 0
    with tillsight.load(bundle.path) as classifier:
        for path, label in photos.eval_items:
            correct += classifier.classify(read_image(path), top_k=1)[0].index == label
    top1 = 100.0 * correct / len(photos.eval_items)
    assert top1 == pytest.approx(accuracy.converted_top1, abs=0.01)  # the device path is what was measured
    assert top1 >= 70.0, f"{spec}: the pruned, fine-tuned bundle classifies only {top1:.1f}% of held-out photos"


@pytest.mark.integration
def test_cli_prunes_from_the_profile_and_from_flags(tiny_model_file, photos: PhotoSplit, tmp_path: Path, capsys, caplog):
    from tillsight.bundle import read_bundle
    from tillsight.cli import main

    profile = _write_profile(tmp_path, photos, 'mode = "unstructured"\ntarget = 0.5\nfinetune_epochs = 1')
    common = [str(tiny_model_file), "--calibration", str(photos.train_list), "--labels", str(photos.labels_file), "--quiet"]
    assert (
        main(["convert", *common, "--profile", str(profile), "--out", str(tmp_path / "a"), "--finetune", str(photos.train_list)])
        == 0
    )
    out = capsys.readouterr().out
    sparsity = re.search(r"pruning: ([0-9.]+)% of \d+ kernel weights are zero, gzip [0-9.]+ MB \(([0-9.]+)x the unpruned", out)
    assert sparsity, out
    assert float(sparsity[1]) == pytest.approx(50.0, abs=2.0) and float(sparsity[2]) < 1.0, out  # per-layer levels
    assert read_bundle(tmp_path / "a" / "generic-x86-cpu").manifest.metrics.pruning.finetune.epochs == 1

    # the flags override the profile: one-shot channel pruning needs no fine-tuning data, and says it leaves it unused
    assert (
        main(
            [
                "convert",
                *common,
                "--profile",
                str(profile),
                "--out",
                str(tmp_path / "b"),
                "--prune",
                "channels:0.25",
                "--finetune-epochs",
                "0",
                "--finetune",
                str(photos.train_list),
            ]
        )
        == 0
    )
    assert any(
        r.message.endswith("is not used: profile 'generic-x86-cpu' prunes in one shot (0 fine-tuning epochs)")
        for r in caplog.records
    ), [r.message for r in caplog.records]
    manifest = read_bundle(tmp_path / "b" / "generic-x86-cpu").manifest
    assert manifest.metrics.pruning.mode == "channels" and manifest.metrics.pruning.finetune is None
    assert manifest.profile.pruning.fraction == 0.25

    # fine-tuning epochs without data: a one-line error before any work, nothing written
    assert main(["convert", *common, "--profile", str(profile), "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "pass --finetune DATA" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()
    assert main(["convert", *common, "--profile", str(profile), "--out", str(tmp_path / "d"), "--prune", "half"]) == 1
    assert "--prune: 'half' is not a pruning setting" in capsys.readouterr().err


@pytest.mark.integration
@requires_nncf
def test_one_shot_channel_pruning_converts_for_openvino(tiny_model_file, photos: PhotoSplit, tmp_path: Path):
    """The OpenVINO target takes the pruned model as it takes any Keras model; no fine-tuning data needed."""
    import tillsight

    pruning = tillsight.PruningOptions.from_spec("channels:0.25", base=tillsight.PruningOptions(finetune_epochs=0))
    bundle = tillsight.convert(
        tiny_model_file,
        "intel-celeron-uhd",
        calibration=photos.train_list,
        evaluation=photos.eval_list,
        labels=photos.labels_file,
        out=tmp_path,
        options=tillsight.ConversionOptions(pruning=pruning, allow_accuracy_drop=True),
    )
    accuracy = bundle.manifest.metrics.accuracy
    assert bundle.manifest.metrics.pruning.macs_after < 0.75 * bundle.manifest.metrics.pruning.macs_before
    assert abs(accuracy.pruned_to_converted_drop) <= 100.0 / accuracy.images + 1e-6  # FP16: at most one photo
    with tillsight.load(bundle.path) as classifier:
        assert classifier.engine.startswith("openvino")


@pytest.mark.integration
def test_the_same_seed_and_data_give_the_same_bundle_and_the_seed_is_recorded(
    tiny_model_file, photos: PhotoSplit, tmp_path: Path, caplog, monkeypatch
):
    import logging

    import tillsight
    import tillsight.classifier

    monkeypatch.delenv("TILLSIGHT_TRUSTED_KEYS", raising=False)
    monkeypatch.setattr(tillsight.classifier, "_warned_unchecked", False)
    caplog.set_level(logging.WARNING, logger="tillsight.classifier")

    profile = _write_profile(tmp_path, photos, 'mode = "none"')

    def convert(seed: int, out: str):
        options = tillsight.ConversionOptions.for_profile(
            profile,
            prune="unstructured:0.5",
            finetune_epochs=1,
            distill=True,
            allow_accuracy_drop=True,
            seed=seed,
        )
        return tillsight.convert(
            tiny_model_file,
            profile,
            calibration=photos.train_list,
            evaluation=photos.eval_list,
            labels=photos.labels_file,
            out=tmp_path / out,
            finetune=photos.train_list,
            options=options,
        )

    first, again, other = convert(7, "a"), convert(7, "b"), convert(8, "c")
    model = lambda bundle: (bundle.path / "model.tflite").read_bytes()  # noqa: E731
    assert model(first) == model(again)  # labels packed with a fixed time, training seeded and deterministic
    assert model(first) != model(other), "another seed trained the same model: the comparison proves nothing"
    assert first.manifest.metrics.pruning.details["seed"] == 7 and other.manifest.metrics.pruning.details["seed"] == 8
    assert not [r for r in caplog.records if "origin is not checked" in r.getMessage()]  # it checks what it just wrote
