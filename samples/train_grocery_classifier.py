"""Train a MobileNetV2-class product classifier on the grocery-store photos.

This is the kind of model a retailer's data team hands to tillsight: a Keras 3 model with
its preprocessing (rescaling to -1..1) and augmentation layers inside, trained from
scratch here (no pretrained weights are downloaded). It writes ``MODEL.keras`` and
``labels.txt`` (fine class names in output-index order, from the dataset's classes.csv).

    python samples/train_grocery_classifier.py --data ../shared/data/grocery-store --out out/grocery

Then convert it for a Raspberry Pi 4 and check accuracy on the held-out val photos:

    tillsight convert out/grocery/grocery_mobilenetv2.keras --profile raspberry-pi-4 \
        --calibration ../shared/data/grocery-store/train.txt --eval ../shared/data/grocery-store/val.txt \
        --labels out/grocery/labels.txt --out out/bundles
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tillsight.datasets import iter_images, read_image_set  # noqa: E402
from tillsight.preprocess import InputSpec, preprocess  # noqa: E402


def read_fine_labels(data: Path) -> list[str]:
    """Fine class names in class-id order, from the dataset's classes.csv."""
    with open(data / "classes.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    by_id = {int(row[1]): row[0] for row in rows}
    return [by_id[i] for i in range(len(by_id))]


def load_split(list_file: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of a list file at ``size``x``size`` in 0-255 RGB, with their class ids."""
    spec = InputSpec(height=size, width=size)  # RGB, center-crop, 0-255: what the runtime will feed
    images, labels = [], []
    for item, image in iter_images(read_image_set(list_file).images, []):
        images.append(preprocess(image, spec).astype(np.uint8))
        labels.append(item.label_index)
    return np.stack(images), np.array(labels)


def build_model(size: int, classes: int, alpha: float) -> keras.Model:
    """MobileNetV2 backbone with rescaling and augmentation inside the model."""
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.RandomRotation(0.05)(x)
    x = keras.layers.RandomZoom(0.1)(x)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(x)
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None, pooling="avg"
    )
    # Keras's MobileNetV2 uses BatchNorm momentum 0.999, tuned for ImageNet-length training:
    # from scratch on a few thousand photos the moving statistics would still be mostly their
    # initial values at the end, and the model would predict one class at inference.
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x = backbone(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="grocery_mobilenetv2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/grocery-store"))
    parser.add_argument("--out", type=Path, default=Path("out/grocery"))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    labels = read_fine_labels(args.data)
    train_x, train_y = load_split(args.data / "train.txt", args.size)
    val_x, val_y = load_split(args.data / "val.txt", args.size)
    model = build_model(args.size, len(labels), args.alpha)
    steps = args.epochs * int(np.ceil(len(train_x) / 32))
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, warmup_target=None)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(train_x, train_y, batch_size=32, epochs=args.epochs, validation_data=(val_x, val_y), verbose=2)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    _, val_accuracy = model.evaluate(val_x, val_y, verbose=0)
    print(f"float top-1 on {len(val_x)} val photos: {100 * val_accuracy:.2f}%")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "grocery_mobilenetv2.keras")
    (args.out / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'grocery_mobilenetv2.keras'} and {args.out / 'labels.txt'}")


if __name__ == "__main__":
    main()
