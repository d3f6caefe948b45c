"""Checkout camera demo with an overlay: tray region, occupancy, the model's guess, events, basket.

Runs a bundle on a camera, stream or video. Where a display exists the overlay is shown
in a window (press q to quit); otherwise (servers, CI, the headless OpenCV wheel) it is
written to an annotated video.

    python samples/checkout_demo.py                                   # the shipped demo video and classifier
    python samples/checkout_demo.py --bundle out/bundles/raspberry-pi-4 --source 0 --roi 120,40,280,280
    python samples/checkout_demo.py --out annotated.mp4               # force writing a video
"""

from __future__ import annotations

import argparse
import queue

import cv2

from tillsight import load
from tillsight.demo import ASSETS, demo_script
from tillsight.pipelines import Basket, CheckoutOptions, CheckoutPipeline, FrameResult, PipelineOptions, open_source

GREEN, AMBER, WHITE = (60, 200, 60), (0, 170, 255), (255, 255, 255)


def has_display() -> bool:
    """True when OpenCV can open a window here (the headless wheel never can)."""
    try:
        cv2.namedWindow("tillsight")
        return True
    except cv2.error:
        return False


class Overlay:
    """Draws what the pipeline sees onto each frame."""

    def __init__(self, roi, basket: Basket):
        self.roi = roi
        self.basket = basket
        self.recent: list[str] = []

    def draw(self, result: FrameResult):
        image = result.frame.image.copy()
        for event in result.events:
            self.recent = (self.recent + [getattr(event, "label", "unknown product")])[-4:]
        if self.roi:
            x, y, w, h = self.roi
            colour = AMBER if result.occupied else GREEN
            cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
        status = "learning empty tray" if result.occupied is None else ("occupied" if result.occupied else "empty")
        if result.prediction is not None:
            status += f": {result.prediction.label} {result.prediction.score:.2f}"
        lines = [f"{result.frame.timestamp:6.1f}s  {status}"] + [f"+ {label}" for label in self.recent]
        lines.append("basket: " + ", ".join(f"{n}x {label}" for label, n in self.basket.items().items()))
        for k, line in enumerate(lines):
            cv2.putText(image, line, (8, 20 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, WHITE, 1, cv2.LINE_AA)
        return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ASSETS / "classifier"))
    parser.add_argument("--source", default=str(ASSETS / "checkout.mp4"), help="camera index, URL, video or folder")
    parser.add_argument("--roi", help="tray region x,y,width,height (default: the demo video's)")
    parser.add_argument("--out", help="write the annotated video here instead of showing a window")
    args = parser.parse_args()

    if args.roi:
        roi = tuple(int(v) for v in args.roi.split(","))
    elif args.source == str(ASSETS / "checkout.mp4"):
        roi = demo_script().roi
    else:
        roi = None
    show = args.out is None and has_display()
    out_path = args.out or "annotated.mp4"
    basket = Basket()
    overlay = Overlay(roi, basket)
    frames: queue.Queue = queue.Queue(maxsize=64)  # drawn on this thread, not the inference thread

    def keep(result: FrameResult) -> None:
        if not show:
            frames.put(result)  # a recording keeps every frame (this slows the pipeline to the writer)
            return
        try:
            frames.put_nowait(result)
        except queue.Full:
            pass  # the display is slower than the camera: skip drawing this one

    source = open_source(args.source)
    options = PipelineOptions(checkout=CheckoutOptions(roi=roi), metrics_interval=0)
    writer = None
    with load(args.bundle) as classifier:
        pipeline = CheckoutPipeline(source, classifier, [basket, print], options, on_frame=keep)
        with pipeline:
            while True:
                try:
                    result = frames.get(timeout=0.2)
                except queue.Empty:
                    if pipeline.join(timeout=0):
                        break
                    continue
                image = overlay.draw(result)
                if show:
                    cv2.imshow("tillsight", image)
                    if cv2.waitKey(1) & 0xFF == ord("q"):
                        break
                else:
                    if writer is None:
                        fps = source.fps or 10.0
                        writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, image.shape[1::-1])
                    writer.write(image)
    if writer is not None:
        writer.release()
        print(f"annotated video: {out_path}")
    print("basket:", basket.items())
    print(pipeline.metrics().summary())


if __name__ == "__main__":
    main()
