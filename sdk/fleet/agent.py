"""The kiosk side of a fleet: follow the desired state, prove a new bundle here, swap it in, report, roll back.

::

    broker ─► PREFIX/kiosks/ID/desired (retained) ─► FleetAgent worker thread:
        download (resumable, size-limited, sha256) ─► unpack into the store ─► load (sha256 of every
        artifact, Ed25519 signature against the trusted keys) ─► acceptance (conformance, budgets,
        local photos) ─► Kiosk.swap_in between two frames ─► store: current = version
    FleetAgent ─► PREFIX/kiosks/ID/reported (retained) after every change; PREFIX/kiosks/ID/health periodically

A bundle that fails any step is never swapped in; the kiosk reports why and never tries that
version again. After a swap, ``crash_failures`` failed frames within ``crash_window_s`` roll the
kiosk back to the previous bundle (and so does a crash loop of the process, see
:meth:`BundleStore.starting`).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..classifier import Classifier
from ..errors import FleetError, TillsightError
from ..kiosk import Kiosk, KioskOptions
from ..pipelines.events import Event, ProductRecognized, UnknownProduct
from ..pipelines.pipeline import FrameResult
from ..signing import TrustedKey, load_trusted_keys
from .acceptance import accept
from .drift import DriftMonitor
from .messages import AcceptanceFigures, DesiredState, Health, KioskStatus, ReportedState, decode, encode, topic
from .options import FleetOptions
from .store import BundleStore
from .transfer import download

__all__ = ["FleetAgent"]

logger = logging.getLogger(__name__)


class FleetAgent:
    """Keeps one kiosk on its desired bundle. Build it, pass :meth:`observe` to the Kiosk as a sink, then :meth:`start`."""

    def __init__(self, options: FleetOptions):
        """Open the store and read the trusted keys (nothing connects until :meth:`start`).

        Raises:
            OptionsError, FleetError: Bad options, unreadable keys or store.
            BackendUnavailableError: paho-mqtt is not installed.
        """
        from ..pipelines.mqtt import _paho

        _paho()  # paho-mqtt missing: say so now, not when the kiosk starts
        self.options = options
        self.store = BundleStore(options.store, options.keep)
        keys = [key for key in options.trusted_keys if isinstance(key, TrustedKey)]
        paths = [key for key in options.trusted_keys if not isinstance(key, TrustedKey)]
        self.trusted_keys = tuple(keys) + (load_trusted_keys(paths) if paths else ())
        self.kiosk: Kiosk | None = None
        self.drift = DriftMonitor(self.store.folder / "drift-baseline.json")
        self._desired: queue.Queue[DesiredState | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._status = KioskStatus.RUNNING
        self._desired_version = ""
        self._acceptance: AcceptanceFigures | None = None
        self._reason = ""
        self._rolled_back_at_start = ""
        self._failures_at_swap = 0
        self._client: Any = None
        self._threads: list[threading.Thread] = []
        self._last_health = (time.monotonic(), 0)

    # -- before the kiosk starts -----------------------------------------------------------

    def kiosk_options(self, options: KioskOptions) -> KioskOptions:
        """The kiosk's options with the bundle the store says to run (after a crash loop: the previous one)."""
        rolled_back = self.store.starting(self.options.crash_failures, self.options.crash_window_s)
        if rolled_back:
            self._rolled_back_at_start = rolled_back
            self._status = KioskStatus.ROLLED_BACK
            self._reason = self.store.state.refused.get(rolled_back, "")
        current = self.store.state.current
        if current and self.store.has(current):
            return dataclasses.replace(
                options, bundle=self.store.bundle_path(current), version=current, trusted_keys=self.options.trusted_keys
            )
        return dataclasses.replace(options, trusted_keys=self.options.trusted_keys)

    def observe(self, event: Event) -> None:
        """A sink: every event the kiosk emits, for the health report and drift statistics."""
        if isinstance(event, ProductRecognized):
            self.drift.item(event.score, unknown=False)
        elif isinstance(event, UnknownProduct):
            self.drift.item(0.0, unknown=True)

    def on_frame(self, result: FrameResult) -> None:
        """The kiosk's ``on_frame``: the tray region of every frame, for the drift statistics."""
        self.drift.frame(result.lane, result.tray, result.occupied)

    # -- running -----------------------------------------------------------------------------

    def start(self, kiosk: Kiosk) -> FleetAgent:
        """Connect to the broker, follow the desired state and report; returns self."""
        self.kiosk = kiosk
        from ..pipelines.mqtt import mqtt_client

        broker = self.options.broker
        client = mqtt_client(broker, f"tillsight-kiosk-{self.options.kiosk_id}")
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(broker.host, broker.port, broker.keepalive)
        client.loop_start()
        for target, name in ((self._work, "tillsight-fleet"), (self._watch, "tillsight-fleet-health")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following the desired state (a download or check in progress ends at its next step)."""
        self._stop.set()
        self._desired.put(None)
        for thread in self._threads:
            thread.join(timeout)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.error("the fleet broker %s refused the connection: %s", self.options.broker.address, reason_code)
            return
        client.subscribe(topic(self.options.prefix, self.options.kiosk_id, "desired"), qos=1)
        self._report()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if not message.payload:  # a cleared retained message
            return
        try:
            desired = decode(message.payload, DesiredState, message.topic)
        except FleetError as exc:
            logger.error("%s", exc)
            return
        self._desired.put(desired)

    # -- the worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            desired = self._desired.get()
            while not self._desired.empty():  # only the newest desired state matters
                desired = self._desired.get_nowait()
            if desired is None:
                return
            try:
                self._follow(desired)
            except Exception as exc:  # the agent must outlive one bad desired state
                logger.error("fleet: desired version %s: %s", desired.version, exc, exc_info=not isinstance(exc, TillsightError))
                self._set(KioskStatus.REFUSED, reason=str(exc), desired=desired.version)

    def _follow(self, desired: DesiredState) -> None:
        assert self.kiosk is not None
        version = BundleStore.check_version(desired.version)
        if version == self.kiosk.version:
            self._set(KioskStatus.RUNNING, reason="", desired=version)
            return
        if version in self.store.state.refused:
            self._set(KioskStatus.REFUSED, reason=self.store.state.refused[version], desired=version)
            return
        if desired.bytes > self.options.max_bundle_bytes:
            self._refuse(
                version, f"the bundle is {desired.bytes} bytes, over this kiosk's limit of {self.options.max_bundle_bytes}"
            )
            return
        if not self.store.has(version) and not desired.url:
            self._refuse(version, "the desired state names no URL and this kiosk does not keep that version")
            return
        if not self.store.has(version):
            self._set(KioskStatus.DOWNLOADING, reason="", desired=version)
            packed = self._download(desired)
            if packed is None:
                return
            try:
                self.store.install(version, packed)
            except TillsightError as exc:
                self._refuse(version, str(exc))
                return
        self._set(KioskStatus.CHECKING, reason="", desired=version)
        try:
            candidate = self.kiosk.load_candidate(self.store.bundle_path(version), version)
        except TillsightError as exc:  # a bad sha256 of an artifact, a missing or foreign signature
            self._refuse(version, str(exc))
            return
        self._check_and_swap(version, candidate)

    def _download(self, desired: DesiredState) -> Path | None:
        """The packed bundle, retried every ``retry_s`` while it is unreachable; None when a newer desired state came."""
        target = self.store.download_path(desired.sha256)
        while not self._stop.is_set():
            try:
                return download(desired.url, target, desired.sha256, desired.bytes)
            except FleetError as exc:
                if "sha256" in str(exc) and "announced" in str(exc):
                    self._refuse(desired.version, str(exc))
                    return None
                logger.warning("fleet: %s; trying again in %.0f s", exc, self.options.retry_s)
                self._set(KioskStatus.DOWNLOADING, reason=str(exc))
            if not self._desired.empty():
                return None
            self._stop.wait(self.options.retry_s)
        return None

    def _check_and_swap(self, version: str, candidate: Classifier) -> None:
        assert self.kiosk is not None
        try:
            figures = accept(candidate, self.options.acceptance)
            self._acceptance = figures
            if not figures.passed:
                candidate.close()
                self._refuse(version, f"acceptance: {figures.reason}")
                return
            self._keep_running_bundle()
            self.kiosk.swap_in(candidate)
        except BaseException:
            candidate.close()
            raise
        self.store.swapped(version)
        self._failures_at_swap = self._failures()
        self._set(KioskStatus.RUNNING, reason="")

    def _keep_running_bundle(self) -> None:
        """Before the first swap: copy the kiosk's own bundle into the store, so that a rollback can go back to it."""
        assert self.kiosk is not None
        running = self.kiosk.version
        bundle = self.kiosk.classifier.bundle
        if bundle is not None and not self.store.has(running):
            try:
                shutil.copytree(bundle.path, self.store.bundle_path(running))
            except (OSError, FleetError) as exc:
                logger.warning("fleet: cannot keep the running bundle %s for a rollback: %s", running, exc)
        if not self.store.state.current and self.store.has(running):
            self.store.swapped(running)  # the record starts with the bundle the kiosk came with

    def _refuse(self, version: str, reason: str) -> None:
        logger.warning("fleet: bundle %s refused: %s", version, reason)
        self.store.refuse(version, reason)
        self._set(KioskStatus.REFUSED, reason=reason, desired=version)

    # -- after a swap: failures, health ---------------------------------------------------------

    def _failures(self) -> int:
        assert self.kiosk is not None
        return sum(m.inference_errors + m.frame_errors for m in self.kiosk.metrics().values())

    def _watch(self) -> None:
        """Roll back on a failure burst after a swap; publish health every ``health_interval_s``."""
        next_health = time.monotonic() + self.options.health_interval_s
        while not self._stop.wait(0.5):
            self._check_failures()
            if time.monotonic() >= next_health:
                self._publish_health()
                next_health = time.monotonic() + self.options.health_interval_s

    def _check_failures(self) -> None:
        assert self.kiosk is not None
        state = self.store.state
        if not state.previous or time.time() - state.swapped_at > self.options.crash_window_s:
            return
        failed = self._failures() - self._failures_at_swap
        if failed < self.options.crash_failures:
            return
        version, previous = state.current, state.previous
        reason = f"{failed} frames failed within {self.options.crash_window_s / 60:.0f} min of taking it"
        logger.warning("fleet: bundle %s: %s; going back to %s", version, reason, previous)
        try:
            self.kiosk.swap_bundle(self.store.bundle_path(previous), previous)
        except TillsightError as exc:
            logger.error("fleet: cannot go back to %s: %s", previous, exc)
            return
        self.store.rolled_back(version, reason)
        self._failures_at_swap = self._failures()
        self._set(KioskStatus.ROLLED_BACK, reason=reason)

    def health(self) -> Health:
        """This kiosk's health now (what :meth:`_publish_health` sends)."""
        assert self.kiosk is not None
        metrics = list(self.kiosk.metrics().values())
        inference = [stats for m in metrics if (stats := m.stage_latency.get("inference")) is not None]
        sink_drops: dict[str, int] = {}
        for lane in metrics:
            for sink in lane.sinks:
                sink_drops[sink.name] = sink_drops.get(sink.name, 0) + sink.dropped
        window = self.drift.snapshot()
        now, processed = time.monotonic(), sum(m.frames_processed for m in metrics)
        then, processed_then = self._last_health
        self._last_health = (now, processed)
        return Health(
            kiosk_id=self.options.kiosk_id,
            version=self.kiosk.version,
            fps=round((processed - processed_then) / max(now - then, 1e-6), 2),
            p50_ms=max((lane.p50_ms for lane in inference), default=0.0),
            p95_ms=max((lane.p95_ms for lane in inference), default=0.0),
            frames_dropped=sum(m.frames_dropped for m in metrics),
            sink_drops=sink_drops,
            outbox_depth=self.kiosk.outbox_depth,
            failures=self._failures() - self._failures_at_swap,
            items=window.items,
            unknown_rate=window.unknown_rate,
            score_histogram=window.score_histogram,
            drift=list(self.drift.alerts()),
            updated=time.time(),
        )

    def _publish_health(self) -> None:
        self._publish("health", self.health)

    # -- reported state --------------------------------------------------------------------------

    def _set(self, status: KioskStatus, reason: str | None = None, desired: str | None = None) -> None:
        """Change the status, and with it the reason and the desired version it is about, in one step."""
        with self._lock:
            self._status = status
            if reason is not None:
                self._reason = reason
            if desired is not None:
                self._desired_version = desired
        self._report()

    def reported(self) -> ReportedState:
        """What this kiosk reports now."""
        state = self.store.state
        with self._lock:  # status, reason and desired version are read as one
            status, reason, desired = self._status, self._reason, self._desired_version
        return ReportedState(
            kiosk_id=self.options.kiosk_id,
            group=self.options.group,
            status=status,
            current=self.kiosk.version if self.kiosk is not None else state.current,
            previous=state.previous,
            desired=desired,
            model_sha256=self.kiosk.classifier.model_sha256 if self.kiosk is not None else "",
            acceptance=self._acceptance,
            reason=reason,
            updated=time.time(),
        )

    def _report(self) -> None:
        self._publish("reported", self.reported)

    def _publish(self, kind: str, message: Callable[[], ReportedState | Health]) -> None:
        """Publish this kiosk's ``kind`` state (retained, QoS 1), once connected."""
        if self._client is not None:
            payload = encode(message())
            self._client.publish(topic(self.options.prefix, self.options.kiosk_id, kind), payload, qos=1, retain=True)
