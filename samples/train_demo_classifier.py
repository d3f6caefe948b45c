"""Train and convert the small classifier that ``tillsight demo`` ships with.

Five grocery products (``checkout_scene.DEMO_CLASSES``), seen as the checkout camera sees
them: real photos from the grocery-store dataset's *train* split laid on a simulated tray
at random sizes and positions, cropped to the tray region. The demo video
(``make_checkout_video.py``) uses only *val* photos, so the demo runs on products the
model has never seen. A small CNN with its rescaling inside, trained from scratch, then
converted with tillsight for the ``generic-x86-cpu`` profile (full int8, uint8 IO) and
checked on held-out tray views.

    python samples/train_demo_classifier.py --data ../shared/data/grocery-store --out sdk/demo_assets/classifier

About 4 minutes on a 2-core machine. Writes the bundle atomically (a failed run leaves
the shipped one as it was).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from checkout_scene import DEMO_CLASSES, TRAY, camera_noise, make_counter, photos_by_class, place, tray_crop  # noqa: E402

SIZE = 128


def tray_views(photo: np.ndarray, views: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``views`` tray crops with the product at random sizes and positions, some partly off the tray."""
    x, y, w, h = TRAY
    crops = []
    for _ in range(views):
        size = int(rng.uniform(0.65, 0.95) * w)
        slack = (w - size) / 2 + 0.25 * size  # up to a quarter of the product beyond the tray edge
        center = (x + w / 2 + rng.uniform(-slack, slack), y + h / 2 + rng.uniform(-slack, slack))
        product = photo[:, ::-1] if rng.random() < 0.5 else photo
        crops.append(tray_crop(camera_noise(place(make_counter(rng), product, center, size), rng)))
    return crops


def write_views(photos: dict[str, list[Path]], folder: Path, views: int, rng: np.random.Generator) -> None:
    """Tray views of every photo as JPEG files in one subfolder per label."""
    for label, paths in photos.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for path in paths:
            photo = cv2.imread(str(path))
            for k, crop in enumerate(tray_views(photo, views, rng)):
                cv2.imwrite(str(folder / label / f"{path.stem}_{k}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])


def load_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Views as the runtime will feed them (tillsight's own preprocessing), with label indices."""
    from tillsight.datasets import iter_images, read_image_set
    from tillsight.preprocess import InputSpec, preprocess

    spec = InputSpec(height=SIZE, width=SIZE)
    images, targets = [], []
    for item, image in iter_images(read_image_set(folder, DEMO_CLASSES).images, []):
        images.append(preprocess(image, spec))
        targets.append(item.label_index)
    return np.stack(images), np.array(targets)


def build_model(classes: int):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.RandomBrightness(0.1, value_range=(0, 255))(x)
    x = keras.layers.Rescaling(1.0 / 255)(x)
    for filters in (16, 32, 64, 96):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="demo_tray_classifier")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/grocery-store"))
    parser.add_argument("--out", type=Path, default=Path("sdk/demo_assets/classifier"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--views", type=int, default=6, help="tray views per training photo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import tillsight

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        write_views(photos_by_class(args.data, "train.txt"), work_dir / "train", args.views, rng)
        write_views(photos_by_class(args.data, "val.txt"), work_dir / "val", 4, rng)
        train_x, train_y = load_folder(work_dir / "train")
        val_x, val_y = load_folder(work_dir / "val")
        print(f"{len(train_x)} training views, {len(val_x)} held-out views (val photos)")

        model = build_model(len(DEMO_CLASSES))
        schedule = keras.optimizers.schedules.CosineDecay(2e-3, args.epochs * int(np.ceil(len(train_x) / 32)))
        model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(train_x, train_y, batch_size=32, epochs=args.epochs, validation_data=(val_x, val_y), verbose=2)
        _, accuracy = model.evaluate(val_x, val_y, verbose=0)
        print(f"float top-1 on held-out tray views: {100 * accuracy:.2f}%")

        labels = work_dir / "labels.txt"
        labels.write_text("\n".join(DEMO_CLASSES) + "\n")
        bundle = tillsight.convert(
            model, "generic-x86-cpu", calibration=work_dir / "train", evaluation=work_dir / "val",
            labels=labels, out=work_dir / "bundles",
        )
        accuracy = bundle.manifest.metrics["accuracy"]
        print(f"int8 top-1 {accuracy['converted_top1']:.2f}%, agreement with float {accuracy['top1_agreement']:.2f}%")
        # Replace the shipped bundle only now that the new one is complete and verified.
        staged = args.out.with_name(args.out.name + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(bundle.path, staged)
        previous = args.out.with_name(args.out.name + ".old")
        if args.out.exists():
            args.out.rename(previous)
        staged.rename(args.out)
        shutil.rmtree(previous, ignore_errors=True)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
