"""Every compression mode on the nested shapes Keras classifiers come in: a nested base model, a nested head.

Transfer learning's usual shape puts a ``keras.applications`` base model inside the classifier
(``Input -> RandomFlip -> Rescaling -> MobileNetV2(include_top=False, pooling="avg") -> Dropout -> Dense``,
the session's ``transfer_model_file``);
others put a small head model after pooling. Pruning, its BatchNorm and least-squares steps, QAT
and compensated rounding all walk the graph, and each once failed on one of these shapes. Flat models go
through every mode in ``test_pruning`` (its round trips) and ``test_training`` (QAT), on the session's tiny model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SIZE, PhotoSplit, load_photos, one_photo_tolerance

SHAPES = ("nested-base", "nested-head")


def build_nested_head():
    """A 4-class classifier with a small head model after pooling, RGB 0-255 in."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (16, 32, 48):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    head_input = keras.Input((48,))
    h = layers.Dense(24, activation="relu")(head_input)
    h = layers.Dropout(0.1)(h)
    head = keras.Model(head_input, layers.Dense(4, activation="softmax")(h), name="head")
    return keras.Model(inputs, head(x), name="nested_head")


@pytest.fixture(scope="module")
def shape_models(photos: PhotoSplit, transfer_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The nested head trained on the real train photos and saved; the nested base is the session's transfer model."""
    import keras

    items = [(Path(line.split(",")[0]), int(line.split(",")[1])) for line in photos.train_list.read_text().splitlines()]
    inputs, targets, _ = load_photos(items)
    folder = tmp_path_factory.mktemp("shapes")
    model = build_nested_head()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(inputs, targets, batch_size=16, epochs=12, verbose=0)
    model.save(folder / "nested-head.keras")
    return {"nested-base": transfer_model_file, "nested-head": folder / "nested-head.keras"}


@pytest.mark.integration
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["channels:0.4", "unstructured:0.5", "qat"])
def test_every_compression_mode_converts_every_model_shape(shape, mode, shape_models, photos: PhotoSplit, tmp_path: Path):
    import tillsight

    qat = mode == "qat"
    options = tillsight.ConversionOptions.for_profile(
        "generic-x86-cpu",
        prune=None if qat else mode,
        finetune_epochs=None if qat else 1,
        qat=qat,
        qat_epochs=1 if qat else None,
        distill=True,
        allow_accuracy_drop=True,
    )
    profile = one_photo_tolerance("generic-x86-cpu", tmp_path, photos)  # 48 calibration photos: enough for these models
    text = profile.read_text().replace("calibration_images = 300", "calibration_images = 48")
    profile.write_text(text.replace("min_calibration_images = 100", "min_calibration_images = 32"))
    bundle = tillsight.convert(
        shape_models[shape],
        profile,
        calibration=photos.train_list,
        evaluation=photos.eval_list,
        labels=photos.labels_file,
        out=tmp_path / "out",
        finetune=photos.train_list,
        options=options,
    )
    metrics = bundle.manifest.metrics
    if mode.startswith("channels"):
        assert metrics.pruning.macs_after < 0.8 * metrics.pruning.macs_before
        assert metrics.pruning.details["reconstruction"]["layers"] > 0
    elif mode.startswith("unstructured"):
        assert metrics.pruning.sparsity == pytest.approx(0.5, abs=0.02)
        assert metrics.pruning.gzip_bytes < metrics.pruning.gzip_bytes_unpruned
    else:
        assert metrics.qat.training.epochs == 1
    accuracy = metrics.accuracy
    reference = accuracy.pruned_top1 if accuracy.pruned_top1 is not None else accuracy.float_top1
    moved = round(abs(reference - accuracy.converted_top1) * accuracy.images / 100)  # in photos: top-1 is kept to 3 decimals
    assert moved <= 3, f"int8 moved top-1 by {moved} of {accuracy.images} photos, more than 3"
    with tillsight.load(bundle.path) as classifier:
        frame = load_photos(photos.eval_items[:1])[2][0]
        assert 0 <= classifier.classify(frame, top_k=1)[0].index < 4


@pytest.mark.integration
@pytest.mark.parametrize("shape", ["nested-base", "nested-head"])
def test_a_nested_teacher_distills_into_a_student(shape, shape_models, photos: PhotoSplit, tmp_path: Path):
    import tillsight

    result = tillsight.distill(
        shape_models[shape],
        "mobilenetv3-small-minimal",
        tmp_path / "student.keras",
        data=photos.train_list,
        epochs=1,
        evaluation=photos.eval_list,
        labels=photos.labels_file,
    )
    assert result.path.is_file() and result.report.accuracy.images == len(photos.eval_items)
    assert np.isfinite(result.report.training.loss).all()
