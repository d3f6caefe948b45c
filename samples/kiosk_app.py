"""How a kiosk app embeds tillsight: load a bundle, start the pipeline, react to events in callbacks.

The app owns its UI and its point-of-sale connection; tillsight calls back with product
events from its own threads. Callbacks must not block for long (they run on the sink
thread): hand work to the app's own queue, as here.

    python samples/kiosk_app.py                                  # the shipped demo video and classifier
    python samples/kiosk_app.py --bundle out/bundles/raspberry-pi-4 --source 0 --roi 120,40,280,280
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading

import tillsight
from tillsight.demo import ASSETS, demo_script
from tillsight.pipelines import (
    CaptureOptions,
    CheckoutOptions,
    CheckoutPipeline,
    JsonLines,
    PipelineOptions,
    ProductRecognized,
    UnknownProduct,
    open_source,
)

#: The store's price list (the point-of-sale system would supply it); products not on it cost 0 here.
PRICES = {
    "Banana": 0.35,
    "Granny-Smith": 0.60,
    "Golden-Delicious": 0.55,
    "Arla-Standard-Milk": 1.25,
    "Arla-Ecological-Medium-Fat-Milk": 1.45,
    "Oatly-Oat-Milk": 1.95,
    "Oatly-Natural-Oatghurt": 2.25,
    "Red-Bell-Pepper": 0.90,
    "Yellow-Bell-Pepper": 0.90,
    "Carrots": 0.80,
    "Pineapple": 2.50,
    "Aubergine": 1.10,
}


class Kiosk:
    """A minimal self-checkout: a basket, a 'call staff' light, an audit log."""

    def __init__(self, prices: dict[str, float]):
        self.prices = prices
        self.basket: list[str] = []
        self.staff_needed = threading.Event()
        self.pos_queue: queue.Queue = queue.Queue()  # the point-of-sale talks to its server on its own thread

    def on_event(self, event) -> None:
        """tillsight sink: called once per decided item."""
        if isinstance(event, ProductRecognized):
            self.basket.append(event.label)
            self.pos_queue.put(("add", event.label, self.prices.get(event.label, 0.0)))
            print(f"added {event.label} ({event.score:.0%}) - total {self.total():.2f}")
        elif isinstance(event, UnknownProduct):
            self.staff_needed.set()
            print("unrecognized item on the tray: staff called")

    def total(self) -> float:
        return sum(self.prices.get(label, 0.0) for label in self.basket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ASSETS / "classifier"))
    parser.add_argument("--source", default=str(ASSETS / "checkout.mp4"))
    parser.add_argument("--roi", help="tray region x,y,width,height (default: the demo video's)")
    parser.add_argument("--audit", default="kiosk-events.jsonl", help="JSON lines audit log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    roi = tuple(int(v) for v in args.roi.split(",")) if args.roi else demo_script().roi
    kiosk = Kiosk(PRICES)
    options = PipelineOptions(
        checkout=CheckoutOptions(roi=roi, unknown_after=5.0),
        capture=CaptureOptions(max_reconnects=None),  # a kiosk never gives up on its camera
        metrics_interval=60.0,  # a metrics line in the log every minute
    )
    with JsonLines(args.audit) as audit, tillsight.load(args.bundle) as classifier:
        pipeline = CheckoutPipeline(open_source(args.source), classifier, [kiosk.on_event, audit], options)
        signal.signal(signal.SIGTERM, lambda *_: pipeline.stop())  # systemd stops the service cleanly
        pipeline.run()
    print(f"basket: {kiosk.basket}, total {kiosk.total():.2f}, {kiosk.pos_queue.qsize()} POS messages queued")


if __name__ == "__main__":
    main()
