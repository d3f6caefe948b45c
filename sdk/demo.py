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
from collections.abc import Sequence
from pathlib import Path

import msgspec

from .classifier import load
from .errors import SourceError
from .pipelines import Basket, CheckoutOptions, CheckoutPipeline, PipelineOptions, VideoFileSource
from .pipelines.events import Event
from .pipelines.metrics import PipelineMetrics
from .pipelines.sinks import Sink

__all__ = ["ASSETS", "DemoResult", "DemoScript", "Placement", "demo_script", "run_demo"]

ASSETS = Path(__file__).resolve().parent / "demo_assets"


@dataclasses.dataclass(frozen=True)
class Placement:
    """One product on the demo tray: which photo, and when it arrives and is gone (seconds into the video)."""

    label: str
    photo: str  # under the Grocery Store Dataset's folder
    arrive_s: float
    gone_s: float


@dataclasses.dataclass(frozen=True)
class DemoScript:
    """What the shipped demo video shows (``demo_assets/checkout.json``)."""

    video: str  # the file, beside the script
    fps: int
    frame_size: tuple[int, int]  # width, height
    roi: tuple[int, int, int, int]  # the tray: x, y, width, height
    frames: int
    placements: tuple[Placement, ...]  # in the order they appear
    expected_basket: dict[str, int]  # label -> count
    credit: str


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


def demo_script() -> DemoScript:
    """The shipped video's script: fps, tray region, placements, expected basket.

    Raises:
        SourceError: The demo assets are missing from this installation, or the script is damaged.
    """
    path = ASSETS / "checkout.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=DemoScript)
    except OSError as exc:
        raise SourceError(f"the demo assets are missing ({path}); reinstall tillsight") from exc
    except msgspec.DecodeError as exc:
        raise SourceError(f"the demo script {path} is damaged ({exc}); reinstall tillsight") from exc


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
    video_path = Path(video) if video is not None else ASSETS / script.video
    roi = roi if roi is not None else (script.roi if video is None else None)
    options = PipelineOptions(checkout=CheckoutOptions(roi=roi), metrics_interval=0)
    events: list[Event] = []
    basket = Basket()
    with load(bundle if bundle is not None else ASSETS / "classifier", threads=threads) as classifier:
        source = VideoFileSource(video_path, fps=script.fps if video is None else None)
        metrics = CheckoutPipeline(source, classifier, [events.append, basket, *sinks], options).run()
    expected = script.expected_basket if video is None and bundle is None else None
    return DemoResult(tuple(events), basket.items(), basket.unknown, expected, metrics)
