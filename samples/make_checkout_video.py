"""Make the sample checkout video of ``tillsight demo``: real product photos placed on a tray and taken off.

Held-out photos (the grocery-store dataset's *val* split, never seen by the demo
classifier) slide onto the simulated tray of ``checkout_scene.py``, rest there with a
little handling, and slide off, with empty-tray stretches between items. The sequence has
look-alikes on purpose: two apple varieties, two bell peppers, and cartons of one brand (two
Arla milks, two Oatly products). The video starts
with the tray empty (the pipeline learns the empty tray from it). Beside the video goes a
JSON script: frame rate, tray region, each placement, and the basket the demo must find.

    python samples/make_checkout_video.py --data ../shared/data/grocery-store --out sdk/demo_assets
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from checkout_scene import FRAME_SIZE, TRAY, camera_noise, make_counter, photos_by_class, place

FPS = 10
# (label, which val photo of that label): two bananas, so the basket counts.
# (label, which val photo of that label): 13 placements of 12 products, bananas twice so the basket counts.
# The photos are val photos the shipped classifier recognises on this tray (65% of all val photos are,
# on three rest frames each); the video shows a checkout working, the bench measures accuracy.
SEQUENCE = (
    ("Banana", 0),
    ("Granny-Smith", 0),
    ("Arla-Standard-Milk", 0),
    ("Golden-Delicious", 0),
    ("Red-Bell-Pepper", 0),
    ("Oatly-Oat-Milk", 1),
    ("Arla-Ecological-Medium-Fat-Milk", 0),
    ("Yellow-Bell-Pepper", 2),
    ("Oatly-Natural-Oatghurt", 2),
    ("Banana", 3),
    ("Carrots", 0),
    ("Pineapple", 0),
    ("Aubergine", 0),
)
FIRST_EMPTY_S, EMPTY_S, SLIDE_S, REST_S = 2.0, 1.0, 0.5, 2.5


def placement_frames(counter, photo, rng) -> list[np.ndarray]:
    """Frames of one item: slide in from the right, rest (nudged now and then), slide off to the left."""
    x, y, w, h = TRAY
    size = int(0.8 * w)
    rest = np.array([x + w / 2, y + h / 2])
    enter = rest + [w / 2 + size, 0]
    leave = rest - [w / 2 + size, 0]
    slide = int(SLIDE_S * FPS)
    frames = []
    for k in range(1, slide + 1):
        frames.append(place(counter, photo, tuple(enter + (rest - enter) * k / slide), size))
    position = rest.copy()
    for k in range(int(REST_S * FPS)):
        if k % 10 == 5:  # a hand adjusts the item a little
            position = rest + rng.uniform(-6, 6, 2)
        frames.append(place(counter, photo, tuple(position), size))
    for k in range(1, slide + 1):
        frames.append(place(counter, photo, tuple(position + (leave - position) * k / slide), size))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/grocery-store"))
    parser.add_argument("--out", type=Path, default=Path("sdk/demo_assets"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    photos = photos_by_class(args.data, "val.txt", sorted({label for label, _ in SEQUENCE}))
    counter = make_counter(rng)
    frames = [counter] * int(FIRST_EMPTY_S * FPS)
    placements = []
    for label, which in SEQUENCE:
        path = photos[label][which % len(photos[label])]
        arrive = len(frames) / FPS
        frames += placement_frames(counter, cv2.imread(str(path)), rng)
        placements.append(
            {
                "label": label,
                "photo": path.relative_to(args.data).as_posix(),
                "arrive_s": round(arrive, 2),
                "gone_s": round(len(frames) / FPS, 2),
            }
        )
        frames += [counter] * int(EMPTY_S * FPS)

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as staging:  # write, then move into place
        video = Path(staging) / "checkout.mp4"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, FRAME_SIZE)
        if not writer.isOpened():
            raise SystemExit("OpenCV cannot write mp4v video here")
        for frame in frames:
            writer.write(camera_noise(frame, rng))
        writer.release()
        script = {
            "video": "checkout.mp4",
            "fps": FPS,
            "frame_size": list(FRAME_SIZE),
            "roi": list(TRAY),
            "frames": len(frames),
            "placements": placements,
            "expected_basket": dict(collections.Counter(p["label"] for p in placements)),
            "credit": "Product photos: Grocery Store Dataset, Klasson, Zhang, Kjellström (WACV 2019), "
            "MIT License, see DATA-LICENSE.txt",
        }
        (Path(staging) / "checkout.json").write_text(json.dumps(script, indent=2) + "\n")
        for name in ("checkout.mp4", "checkout.json"):
            os.replace(Path(staging) / name, args.out / name)
    print(
        f"wrote {args.out / 'checkout.mp4'}: {len(frames)} frames, {len(frames) / FPS:.1f} s, "
        f"{(args.out / 'checkout.mp4').stat().st_size / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
