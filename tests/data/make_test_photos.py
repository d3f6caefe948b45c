"""Rebuild tests/data/grocery-store: the small, downscaled subset of the Grocery Store photos the suite runs on.

    python tests/data/make_test_photos.py --source ../shared/data/grocery-store

Keeps the dataset's layout (``train/…``, ``val/…``, ``train.txt``, ``val.txt`` with the original
fine and coarse ids, ``classes.csv``, ``LICENSE``), so the full dataset can stand in for it
(``TILLSIGHT_TEST_DATA``). Photos are resized so their short side is ``--short-side`` pixels and
re-encoded as JPEG; the tests' models run at 64 px.
"""

from __future__ import annotations

import argparse
import collections
import csv
import shutil
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
# The four classes tests/conftest.py trains on (fine ids of classes.csv).
FINE_IDS = (27, 6, 14, 78)
# Products that are ImageNet classes too (Granny-Smith, Lemon, Orange, Pineapple, Pomegranate, Cucumber,
# Zucchini): the first few val photos of each, for the check that pretrained ImageNet weights load right.
IMAGENET_FINE_IDS = (1, 8, 16, 23, 25, 63, 80)
IMAGENET_PHOTOS = 5
README = """\
# Grocery Store photos for the tests

A small subset of the Grocery Store Dataset: every train and val photo of four fine classes
(Banana 6, Watermelon 14, Satsumas 27, Regular-Tomato 78; Regular-Tomato has no val photos),
and the first {imagenet_photos} val photos of seven products that are ImageNet classes too (Granny-Smith 1,
Lemon 8, Orange 16, Pineapple 23, Pomegranate 25, Cucumber 63, Zucchini 80), downscaled to a short side of {short_side} px and re-encoded as JPEG (quality {quality}). Layout, list
files and ids are the dataset's own, so the full dataset can stand in for this folder
(`TILLSIGHT_TEST_DATA=/path/to/grocery-store python -m pytest`). Rebuilt by
`python tests/data/make_test_photos.py --source ../shared/data/grocery-store`.

Source: M. Klasson, C. Zhang, H. Kjellström, "A Hierarchical Grocery Store Image Dataset with
Visual and Semantic Labels", WACV 2019 (arXiv:1901.00711), https://github.com/marcusklasson/GroceryStoreDataset.
License: MIT, in `LICENSE` beside this file.
"""


def downscale(source: Path, target: Path, short_side: int, quality: int) -> None:
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"error: cannot read {source}")
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    if scale < 1:
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise SystemExit(f"error: cannot write {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the full Grocery Store dataset folder")
    parser.add_argument("--out", type=Path, default=HERE / "grocery-store")
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    if not (args.source / "train.txt").is_file():
        parser.error(f"{args.source} has no train.txt: pass the Grocery Store dataset folder")

    staging = args.out.with_name(args.out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for split in ("train", "val"):
        kept, imagenet_taken = [], collections.Counter()
        for line in (args.source / f"{split}.txt").read_text().splitlines():
            fields = [field.strip() for field in line.split(",")]
            if len(fields) < 2:
                continue
            fine_id = int(fields[1])
            if split == "val" and fine_id in IMAGENET_FINE_IDS and imagenet_taken[fine_id] < IMAGENET_PHOTOS:
                imagenet_taken[fine_id] += 1
            elif fine_id not in FINE_IDS:
                continue
            downscale(args.source / fields[0], staging / fields[0], args.short_side, args.quality)
            kept.append(line)
        (staging / f"{split}.txt").write_text("".join(f"{line}\n" for line in kept))
    with open(args.source / "classes.csv", newline="") as source_csv, open(staging / "classes.csv", "w", newline="") as out_csv:
        rows = list(csv.reader(source_csv))
        wanted = FINE_IDS + IMAGENET_FINE_IDS
        csv.writer(out_csv, lineterminator="\n").writerows([rows[0], *(row for row in rows[1:] if int(row[1]) in wanted)])
    shutil.copy(args.source / "LICENSE", staging / "LICENSE")
    (staging / "README.md").write_text(
        README.format(short_side=args.short_side, quality=args.quality, imagenet_photos=IMAGENET_PHOTOS)
    )
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)
    size = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"{args.out}: {len(list(args.out.rglob('*.jpg')))} photos, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
