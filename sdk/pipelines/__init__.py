"""Camera-frame pipelines for unmanned checkout: frames in, product events out.

from tillsight import load
from tillsight.pipelines import CheckoutPipeline, CheckoutOptions, PipelineOptions, JsonLines, open_source

with load("bundles/raspberry-pi-4") as classifier:
    options = PipelineOptions(checkout=CheckoutOptions(roi=(120, 40, 280, 280)))
    CheckoutPipeline(open_source(0), classifier, [JsonLines(), print], options).run()
"""

from .capture import Capture, CaptureOptions, CaptureStats, SourceState
from .checkout import CheckoutLogic, CheckoutOptions, TrayMonitor
from .events import Event, ProductRecognized, UnknownProduct
from .frames import Frame
from .lanes import Lane, MultiLanePipeline
from .metrics import PipelineMetrics
from .pipeline import CheckoutPipeline, FrameResult, PipelineOptions, crop_roi
from .sinks import Basket, JsonLines, Sink, SinkDispatcher, SinkStats
from .sources import CameraSource, ImageFolderSource, Source, StreamSource, VideoFileSource, open_source

__all__ = [
    "Basket",
    "CameraSource",
    "Capture",
    "CaptureOptions",
    "CaptureStats",
    "CheckoutLogic",
    "CheckoutOptions",
    "CheckoutPipeline",
    "Event",
    "Frame",
    "FrameResult",
    "ImageFolderSource",
    "JsonLines",
    "Lane",
    "MultiLanePipeline",
    "PipelineMetrics",
    "PipelineOptions",
    "ProductRecognized",
    "Sink",
    "SinkDispatcher",
    "SinkStats",
    "Source",
    "SourceState",
    "StreamSource",
    "TrayMonitor",
    "UnknownProduct",
    "VideoFileSource",
    "crop_roi",
    "open_source",
]
