"""Convert the grocery sample model into the int8 bundle that ``tillsight demo`` ships.

The sample model (``train_grocery_classifier.py``: ImageNet-pretrained EfficientNet-Lite0
fine-tuned on the train photos of all 81 products) is converted for ``generic-x86-cpu`` (full
int8, uint8 IO) with the crop it was trained with, calibrated on train photos and checked on
the held-out val photos. The demo video (``make_checkout_video.py``) uses val photos only.

    python samples/train_grocery_classifier.py --data ../shared/data/grocery-store --out out/grocery
    python samples/make_demo_bundle.py --model out/grocery/grocery_efficientnet_lite0.keras \\
        --labels out/grocery/labels.txt --data ../shared/data/grocery-store --out sdk/demo_assets/classifier

The shipped bundle is replaced only once the new one is complete and verified.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tillsight  # noqa: E402

CROP = 0.875  # what the sample model was validated with (train_grocery_classifier.CROP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("out/grocery/grocery_efficientnet_lite0.keras"))
    parser.add_argument("--labels", type=Path, default=Path("out/grocery/labels.txt"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/grocery-store"))
    parser.add_argument("--out", type=Path, default=Path("sdk/demo_assets/classifier"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        bundle = tillsight.convert(
            args.model,
            "generic-x86-cpu",
            calibration=args.data / "train.txt",
            evaluation=args.data / "val.txt",
            labels=args.labels,
            out=Path(work),
            options=tillsight.ConversionOptions(crop=CROP, progress=False, allow_accuracy_drop=True),
        )
        accuracy = bundle.manifest.metrics.accuracy
        print(
            f"float top-1 {accuracy.float_top1:.2f}%, int8 {accuracy.converted_top1:.2f}%, "
            f"agreement {accuracy.top1_agreement:.2f}% on {accuracy.images} val photos"
        )
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
