"""``tillsight demo``: a checkout video through the pipeline, with the basket it should give.

The assets ship inside the package (``tillsight/demo_assets``), so the demo needs no
arguments, no camera and no network: the int8 sample classifier of all 81 grocery products
(ImageNet-pretrained EfficientNet-Lite0 fine-tuned by ``samples/train_grocery_classifier.py``,
converted by ``samples/make_demo_bundle.py``) and a checkout video made of held-out product photos
(``samples/make_checkout_video.py``), whose JSON script says which basket it shows.
Product photos: Grocery Store Dataset (Klasson et al., WACV 2019), MIT License.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .classifier import load
from .errors import SourceError
from .pipelines import Basket, CheckoutOptions, CheckoutPipeline, PipelineOptions, VideoFileSource
from .pipelines.events import Event
from .pipelines.metrics import PipelineMetrics
from .pipelines.sinks import Sink

__all__ = ["ASSETS", "DemoResult", "demo_script", "run_demo"]

ASSETS = Path(__file__).resolve().parent / "demo_assets"


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What the demo saw."""

    events: tuple[Event, ...]
    basket: dict[str, int]
    unknown_items: int
    expected_basket: dict[str, int] | None  # from the video's script; None for another video
    metrics: PipelineMetrics

    @property
    def matches(self) -> bool | None:
        """Whether the basket is the one the video shows (None when that is not known)."""
        if self.expected_basket is None:
            return None
        return self.basket == self.expected_basket and self.unknown_items == 0


def demo_script() -> dict[str, Any]:
    """The shipped video's script: fps, tray region, placements, expected basket.

    Raises:
        SourceError: The demo assets are missing from this installation.
    """
    path = ASSETS / "checkout.json"
    if not path.is_file():
        raise SourceError(f"the demo assets are missing ({path}); reinstall tillsight")
    script: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return script


def run_demo(
    video: str | Path | None = None,
    bundle: str | Path | None = None,
    roi: tuple[int, int, int, int] | None = None,
    sinks: Sequence[Sink] = (),
    threads: int | None = None,
) -> DemoResult:
    """Run the checkout pipeline on the demo video (or another video) and collect the basket.

    Args:
        video: Another video to run instead of the shipped one.
        bundle: Another bundle to run instead of the shipped classifier.
        roi: Tray region; defaults to the shipped video's.
        sinks: Extra sinks receiving each event as it happens.
        threads: CPU threads for the model.

    Returns:
        Events, basket and metrics.

    Raises:
        SourceError, BundleError, BackendUnavailableError: The assets or runtime are missing.
    """
    script = demo_script()
    video_path = Path(video) if video is not None else ASSETS / script["video"]
    roi = roi if roi is not None else (tuple(script["roi"]) if video is None else None)
    options = PipelineOptions(checkout=CheckoutOptions(roi=roi), metrics_interval=0)
    events: list[Event] = []
    basket = Basket()
    with load(bundle if bundle is not None else ASSETS / "classifier", threads=threads) as classifier:
        source = VideoFileSource(video_path, fps=script["fps"] if video is None else None)
        metrics = CheckoutPipeline(source, classifier, [events.append, basket, *sinks], options).run()
    expected = script["expected_basket"] if video is None and bundle is None else None
    return DemoResult(tuple(events), basket.items(), basket.unknown, expected, metrics)
