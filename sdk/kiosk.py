"""A kiosk: one bundle, its lanes, its sinks (audit log, MQTT outbox), run as one unit.

What ``tillsight run`` does, callable from a kiosk app::

    options = KioskOptions("bundles/pi4", source="0", mqtt=MqttOptions.from_url(url))
    with Kiosk(options) as kiosk:        # loads the bundle, opens sources and sinks, starts
        ...
        kiosk.swap_bundle("bundles/pi4-new")   # a new model without stopping (fleet rollouts use this)
        result = kiosk.wait()

A ``source`` is a one-camera checkout; ``lanes`` run several trays on one model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .classifier import Classifier, load
from .datasets import read_image, why_unreadable
from .errors import OptionsError, SinkError, TillsightError
from .pipelines import Basket, CheckoutPipeline, ImageFolderSource, JsonLines, PipelineOptions, Source, open_source
from .pipelines.lanes import Lane, LaneSpec, MultiLanePipeline
from .pipelines.metrics import PipelineMetrics
from .pipelines.sinks import Sink
from .signing import TrustedKey

__all__ = ["Kiosk", "KioskOptions", "KioskResult", "SwapReport"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class KioskOptions:
    """Everything a :class:`Kiosk` is told.

    Attributes:
        bundle: The bundle folder to start with.
        source: The one camera, stream, video or folder of a one-lane kiosk (or an unopened
            :class:`~tillsight.pipelines.Source` of the app's own), or give ``lanes``.
        lanes: The lanes of a multi-lane kiosk, each with its id, source and tray region.
        pipeline: Checkout, capture and metrics options shared by the lanes.
        fps, loop, photos: How sources are opened (see :func:`~tillsight.pipelines.open_source`).
        tray_reference: A picture of the empty tray (one-lane kiosks only).
        threads, device: Inference threads and accelerator device (default: the profile's).
        trusted_keys: Keys bundles must be signed with (None: ``TILLSIGHT_TRUSTED_KEYS``).
        version: The starting bundle's version, on every event (default: its model's sha256 start).
        jsonl: The audit log file events are appended to (None: no audit log file).
        mqtt: Publish events to this broker through an outbox (an ``MqttOptions``; None: no MQTT).
        mqtt_drain_timeout: Seconds to wait at the end for the broker to take queued events.
    """

    bundle: str | Path
    source: str | Source | None = None
    lanes: tuple[LaneSpec, ...] = ()
    pipeline: PipelineOptions = PipelineOptions()
    fps: float | None = None
    loop: bool = False
    photos: bool = False
    tray_reference: Path | None = None
    threads: int | None = None
    device: str | None = None
    trusted_keys: tuple[str | Path | TrustedKey, ...] | None = None
    version: str | None = None
    jsonl: Path | None = None
    mqtt: Any = None
    mqtt_drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.lanes and self.source is not None:
            raise OptionsError("give either --source (one lane) or --lane/--lanes (several), not both")
        if not self.lanes and self.source is None:
            raise OptionsError("run needs a source: --source SOURCE, or --lane ID:SOURCE[:X,Y,W,H] per lane, or --lanes FILE")
        ids = [lane.lane_id for lane in self.lanes]
        if len(set(ids)) != len(ids):
            raise OptionsError(f"a multi-lane kiosk needs lanes with distinct ids, got {ids}")
        if self.lanes and self.tray_reference is not None:
            raise OptionsError("--tray-reference is a picture of one tray; with several lanes each learns its empty tray")


@dataclasses.dataclass(frozen=True)
class KioskResult:
    """What a kiosk run ended with.

    Attributes:
        baskets: Each lane's recognized products (label → count) and unknown items, by lane id.
        metrics: Each lane's final pipeline metrics, by lane id.
        failure: The sink failure that ended the run early (an audit log that could not write), or None.
        notes: Hints for the operator about what was seen (e.g. nothing classified, and why).
    """

    baskets: dict[str, tuple[dict[str, int], int]]
    metrics: dict[str, PipelineMetrics]
    failure: SinkError | None = None
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SwapReport:
    """One bundle swapped in on a running kiosk.

    Attributes:
        old_version, new_version: The versions before and after.
        new_model_sha256: The new model file's sha256.
        load_s: Seconds to read, verify, load and warm the new bundle (beside the running one).
        switch_s: Seconds from handing it over to the pipeline taking it at a frame boundary.
    """

    old_version: str
    new_version: str
    new_model_sha256: str
    load_s: float
    switch_s: float


class Kiosk:
    """Runs one bundle on a kiosk's lanes, with its sinks, and takes new bundles while it runs."""

    def __init__(
        self,
        options: KioskOptions,
        sinks: Sequence[Sink] = (),
        on_frame: Any = None,
        loader: Callable[[Path, str | None], Classifier] | None = None,
    ) -> None:
        """Load the bundle and open the sources and sinks (nothing runs until :meth:`start`).

        Args:
            options: The kiosk's bundle, lanes and sinks.
            sinks: More callables receiving every event (a display, the app's own handler).
            on_frame: Called with each :class:`~tillsight.pipelines.FrameResult` on the inference thread.
            loader: Loads a bundle folder at a version into a classifier; default: :func:`tillsight.load` with
                the options' threads, device and trusted keys. Simulations pass one that builds a fake model.

        Raises:
            OptionsError, BundleError, SignatureError, SourceError, SinkError, BackendUnavailableError:
                Whatever was opened is closed again.
        """
        self.options = options
        self._loader = loader
        self._stack = contextlib.ExitStack()
        try:
            self._build(list(sinks), on_frame)
        except BaseException:
            self._stack.close()
            raise
        self._started = self._closed = False

    def _build(self, extra_sinks: list[Sink], on_frame: Any) -> None:
        options = self.options
        reference = None
        if options.tray_reference is not None:
            reference = read_image(options.tray_reference)
            if reference is None:
                raise TillsightError(f"--tray-reference {options.tray_reference} {why_unreadable(options.tray_reference)}")
        self._mqtt: Any = None
        single = options.source is not None
        self.baskets = [Basket()] if single else [Basket(lane=spec.lane_id) for spec in options.lanes]
        sinks: list[Sink] = [*self.baskets]
        if options.jsonl is not None:
            sinks.append(self._stack.enter_context(JsonLines(options.jsonl)))
        sinks.extend(extra_sinks)
        if options.mqtt is not None:
            from .pipelines.mqtt import MqttSink

            mqtt = MqttSink(options.mqtt)
            self._stack.callback(mqtt.close, options.mqtt_drain_timeout)  # after the pipeline has handed it every event
            sinks.append(mqtt)
            self._mqtt = mqtt
        self.classifier = self._load(options.bundle, options.version)
        self._stack.callback(lambda: self.classifier.close())  # the current one, after any swap
        names = [options.source] if options.source is not None else [spec.source for spec in options.lanes]
        sources = [
            name if isinstance(name, Source) else open_source(name, fps=options.fps, loop=options.loop, photos=options.photos)
            for name in names
        ]
        self._folder_sources = [source for source in sources if isinstance(source, ImageFolderSource) and not source.stills]
        self.pipeline: CheckoutPipeline | MultiLanePipeline
        if single:
            self.pipeline = CheckoutPipeline(sources[0], self.classifier, sinks, options.pipeline, reference, on_frame)
        else:
            lanes = [Lane(spec.lane_id, source, spec.roi) for spec, source in zip(options.lanes, sources, strict=True)]
            self.pipeline = MultiLanePipeline(lanes, self.classifier, sinks, options.pipeline, on_frame)

    def _load(self, bundle: str | Path, version: str | None) -> Classifier:
        if self._loader is not None:
            return self._loader(Path(bundle), version)
        options = self.options
        keys = list(options.trusted_keys) if options.trusted_keys is not None else None
        return load(bundle, options.threads, options.device, keys, throughput=len(options.lanes) > 1, version=version)

    @property
    def outbox_depth(self) -> int:
        """Events waiting in the MQTT outbox (0 without MQTT)."""
        return int(self._mqtt.pending) if self._mqtt is not None else 0

    @property
    def version(self) -> str:
        """The version of the bundle deciding events now."""
        return self.pipeline.classifier.version

    def start(self) -> Kiosk:
        """Start the capture, inference and sink threads; returns self."""
        self._started = True
        self.pipeline.start()
        return self

    def load_candidate(self, bundle: str | Path, version: str | None = None) -> Classifier:
        """Load and warm another bundle beside the running one (as the kiosk loads: threads, device, trusted keys).

        Returns:
            The loaded classifier, for :meth:`swap_in` or to close.

        Raises:
            BundleError, SignatureError, BackendUnavailableError, InferenceError: Nothing was swapped.
        """
        candidate = self._load(bundle, version)
        try:
            candidate.warm_up()
        except BaseException:
            candidate.close()
            raise
        return candidate

    def swap_in(self, candidate: Classifier, timeout: float = 30.0) -> SwapReport:
        """Switch the running pipeline to a loaded classifier between two frames, and close the one it replaces.

        Raises:
            OptionsError: A lane's ``background_label`` is not a label of the candidate (it stays open).
            TimeoutError: The pipeline did not take it in time (it stays open; the running one goes on).
        """
        started = time.perf_counter()
        old = self.pipeline.swap_classifier(candidate, timeout)
        switched = time.perf_counter() - started
        self.classifier = candidate
        old.close()
        logger.info("bundle %s swapped in for %s (switched in %.3f s)", candidate.version, old.version, switched)
        return SwapReport(old.version, candidate.version, candidate.model_sha256, 0.0, switched)

    def swap_bundle(self, bundle: str | Path, version: str | None = None, timeout: float = 30.0) -> SwapReport:
        """Load another bundle beside the running one, warm it, and switch to it between two frames.

        Args:
            bundle: The new bundle's folder (verified, and checked against the trusted keys, as at start).
            version: Its version, on every event from now on (default: its model's sha256 start).
            timeout: Seconds to wait for the pipeline to take it.

        Returns:
            What was swapped, and how long loading and switching took.

        Raises:
            BundleError, SignatureError, BackendUnavailableError, OptionsError: The new bundle was not
                swapped in; the running one goes on.
            TimeoutError: The pipeline did not take it in time; the running one goes on.
        """
        started = time.perf_counter()
        candidate = self.load_candidate(bundle, version)
        loaded = time.perf_counter() - started
        try:
            report = self.swap_in(candidate, timeout)
        except BaseException:
            candidate.close()
            raise
        return dataclasses.replace(report, load_s=loaded)

    def wait(self) -> KioskResult:
        """Block until the sources end (or Ctrl-C), stop, close everything; returns what the run ended with.

        Raises:
            SourceError: A source could not be opened, or was lost for good.
        """
        if not self._started:
            self.start()
        failure: SinkError | None = None
        try:
            self.pipeline.wait()
        except SinkError as exc:  # an audit log that cannot write ends the run: say what was kept, then fail
            failure = exc
        finally:
            self.close()
        return self._result(failure)

    def run(self) -> KioskResult:
        """Start, block until the sources end, close: :meth:`start` then :meth:`wait`."""
        return self.wait()

    def metrics(self) -> dict[str, PipelineMetrics]:
        """Each lane's current metrics, by lane id (``""`` for a one-camera kiosk)."""
        if isinstance(self.pipeline, CheckoutPipeline):
            return {"": self.pipeline.metrics()}
        return self.pipeline.metrics()

    def _result(self, failure: SinkError | None) -> KioskResult:
        baskets = {basket.lane or "": (basket.items(), basket.unknown) for basket in self.baskets}
        metrics = self.metrics()
        notes = []
        if self._folder_sources and sum(m.frames_classified for m in metrics.values()) == 0:
            notes.append(
                "nothing was classified: the images of the folder were read as frames of one camera, the first ones as "
                "the empty tray (or pass --tray-reference); for photos of one item each, add --photos"
            )
        return KioskResult(baskets, metrics, failure, tuple(notes))

    def close(self) -> None:
        """Stop the pipeline and close the model, the audit log and the MQTT outbox (draining it first)."""
        if self._closed:
            return
        self._closed = True
        self.pipeline.stop()
        self._stack.close()

    def __enter__(self) -> Kiosk:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()
