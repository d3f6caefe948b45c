"""Rollouts to kiosks running the demo video, through a real mosquitto and a real HTTP server.

Each kiosk here is a Kiosk and a FleetAgent in this process (the kiosk processes of ``tillsight
run --fleet`` are tested in ``test_kiosk_processes.py``), playing the demo video in a loop at 3x.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.broker import Broker, needs_mosquitto, needs_paho
from tillsight.demo import ASSETS, demo_script
from tillsight.fleet import (
    AcceptanceOptions,
    DesiredState,
    FleetAgent,
    FleetOptions,
    KioskStatus,
    RolloutOptions,
    desired_state,
    pack_bundle,
    rollout,
)
from tillsight.fleet.rollout import FleetView
from tillsight.kiosk import Kiosk, KioskOptions
from tillsight.pipelines import CaptureOptions, CheckoutOptions, PipelineOptions, Source
from tillsight.pipelines.mqtt import MqttOptions

from .helpers import HttpServer, demo_bundle_copy, needs_rangehttpserver, wait_until

pytestmark = [needs_mosquitto, needs_paho, needs_rangehttpserver, pytest.mark.integration]

SCRIPT = demo_script()
SEQUENCE = [placement.label for placement in SCRIPT.placements]
QUICK_ACCEPTANCE = AcceptanceOptions(benchmark_frames=10)  # conformance, and a short benchmark


class _Kiosk:
    """A kiosk of the fleet in this process: the demo video in a loop, its events kept."""

    def __init__(
        self,
        kiosk_id: str,
        folder: Path,
        factory: Path,
        broker: Broker,
        public_key: Path,
        acceptance: AcceptanceOptions = QUICK_ACCEPTANCE,
    ):
        self.kiosk_id = kiosk_id
        self.events: list = []
        options = FleetOptions(
            broker=MqttOptions.from_url(f"mqtt://127.0.0.1:{broker.port}/fleet"),
            kiosk_id=kiosk_id,
            store=folder / kiosk_id,
            trusted_keys=(public_key,),
            acceptance=acceptance,
            health_interval_s=1.0,
            retry_s=0.5,
        )
        self.agent = FleetAgent(options)
        pipeline = PipelineOptions(
            checkout=CheckoutOptions(roi=SCRIPT.roi),
            capture=CaptureOptions(pace=True, speed=3.0, drop_frames=False),
            metrics_interval=0,
        )
        kiosk_options = KioskOptions(
            factory, source=str(ASSETS / SCRIPT.video), pipeline=pipeline, fps=10, loop=True, version="v1"
        )
        self.kiosk = Kiosk(
            self.agent.kiosk_options(kiosk_options), sinks=[self.events.append, self.agent.observe], on_frame=self.agent.on_frame
        )
        self.kiosk.start()
        self.agent.start(self.kiosk)

    def stop(self) -> None:
        self.agent.stop()
        self.kiosk.close()

    def labels_follow_the_video(self) -> bool:
        """Every item of the looping video reported once, in order: none lost, none twice."""
        labels = [event.label for event in self.events]
        return labels == [SEQUENCE[i % len(SEQUENCE)] for i in range(len(labels))]


@pytest.fixture
def fleet(tmp_path: Path, retailer_key):
    broker = Broker(tmp_path / "broker").start()
    served = tmp_path / "served"
    served.mkdir()
    http = HttpServer(served)
    factory = demo_bundle_copy(tmp_path / "factory", retailer_key[0])
    kiosks: list[_Kiosk] = []

    def start(*ids: str, **acceptance: AcceptanceOptions) -> list[_Kiosk]:
        for kiosk_id in ids:
            extra = {"acceptance": acceptance[kiosk_id]} if kiosk_id in acceptance else {}
            kiosks.append(_Kiosk(kiosk_id, tmp_path / "kiosks", factory, broker, retailer_key[1], **extra))
        return kiosks

    def publish(name: str, bundle: Path, version: str) -> DesiredState:
        pack_bundle(bundle, served / f"{name}.tar")
        return desired_state(served / f"{name}.tar", http.url(f"{name}.tar"), version)

    options = RolloutOptions(broker=MqttOptions.from_url(f"mqtt://127.0.0.1:{broker.port}/fleet"), kiosks=("k1",), discover_s=1.0)
    yield {"broker": broker, "http": http, "start": start, "publish": publish, "options": options, "tmp": tmp_path}
    for kiosk in kiosks:
        kiosk.stop()
    http.stop()
    broker.kill()


def test_a_rollout_reaches_three_kiosks_in_waves_and_no_event_is_lost(fleet, retailer_key):
    kiosks = fleet["start"]("k1", "k2", "k3")
    assert wait_until(lambda: all(len(k.events) >= 2 for k in kiosks))
    state = fleet["publish"]("v2", demo_bundle_copy(fleet["tmp"] / "v2", retailer_key[0]), "v2")
    options = RolloutOptions(
        broker=fleet["options"].broker, kiosks=("k1", "k2", "k3"), canary=0.05, waves=2, wave_timeout_s=120, discover_s=1.0
    )
    lines: list[str] = []
    result = rollout(state, options, progress=lines.append)
    assert result.completed, lines
    assert [o.wave for o in result.outcomes] == [1, 2, 2] and all(o.outcome == "running" for o in result.outcomes)
    assert wait_until(lambda: all(sum(e.bundle_version == "v2" for e in k.events) >= 2 for k in kiosks))
    for kiosk in kiosks:
        versions = [event.bundle_version for event in kiosk.events]
        assert versions == sorted(versions) and versions[0] == "v1", versions  # v1 until the swap, v2 after
        assert kiosk.labels_follow_the_video(), [e.label for e in kiosk.events]
        reported = kiosk.agent.reported()
        assert reported.status is KioskStatus.RUNNING and reported.current == "v2" and reported.previous == "v1"
        assert reported.acceptance.conformance_agreement == 100.0 and reported.acceptance.p50_ms > 0
    view = FleetView(fleet["options"].broker, "test", health=True).connect()  # what tillsight fleet status reads
    try:
        assert wait_until(lambda: len(view.health) == 3 and all(h.version == "v2" for h in view.health.values()), 10)
        assert {r.current for r in view.reported.values()} == {"v2"}
    finally:
        view.close()


def test_a_bundle_that_fails_acceptance_is_refused_on_every_kiosk_and_the_rollout_rolls_back(fleet, retailer_key):
    kiosks = fleet["start"]("k1", "k2", "k3")
    bad = demo_bundle_copy(fleet["tmp"] / "bad", retailer_key[0], wrong_conformance=True)
    state = fleet["publish"]("bad", bad, "v2-bad")
    options = RolloutOptions(
        broker=fleet["options"].broker, kiosks=("k1", "k2", "k3"), canary=1.0, waves=1, wave_timeout_s=120, discover_s=1.0
    )
    result = rollout(state, options, progress=lambda line: None)
    assert not result.completed and result.aborted_wave == 1 and "3 of 3 kiosks" in result.reason
    assert all(o.outcome == "refused" and "conformance" in o.reason for o in result.outcomes), result.outcomes
    for kiosk in kiosks:  # the rollback names the version each ran before; they keep running it
        assert wait_until(
            lambda k=kiosk: k.agent.reported().desired == "v1" and k.agent.reported().status is KioskStatus.RUNNING, 30
        )
        assert kiosk.kiosk.version == "v1" and all(e.bundle_version == "v1" for e in kiosk.events)
        assert "v2-bad" in kiosk.agent.store.state.refused


def test_one_kiosk_refusing_aborts_the_wave_and_the_kiosks_that_took_the_bundle_go_back(fleet, retailer_key):
    """k3's own photos must keep 100% top-1, which the demo model does not: it refuses; k1 and k2 took v2 and get v1 back."""
    local = Path(__file__).resolve().parents[1] / "data" / "grocery-store" / "val.txt"
    strict = AcceptanceOptions(benchmark_frames=0, local_photos=local, min_local_top1=100.0)
    kiosks = fleet["start"]("k1", "k2", "k3", k3=strict)
    state = fleet["publish"]("v2", demo_bundle_copy(fleet["tmp"] / "v2", retailer_key[0]), "v2")
    options = RolloutOptions(
        broker=fleet["options"].broker, kiosks=("k1", "k2", "k3"), canary=1.0, waves=1, wave_timeout_s=120, discover_s=1.0
    )
    result = rollout(state, options, progress=lambda line: None)
    assert not result.completed and "1 of 3 kiosks of wave 1 failed" in result.reason
    outcomes = {o.kiosk_id: o for o in result.outcomes}
    assert outcomes["k1"].outcome == outcomes["k2"].outcome == "running" and outcomes["k3"].outcome == "refused"
    assert "local photos: top-1" in outcomes["k3"].reason
    for kiosk in kiosks:
        assert wait_until(lambda k=kiosk: k.kiosk.version == "v1" and k.agent.reported().status is KioskStatus.RUNNING, 60)
    assert wait_until(lambda: all(k.events and k.events[-1].bundle_version == "v1" for k in kiosks[:2]), 60)
    for kiosk in kiosks[:2]:  # v1, then v2 while it ran, then v1 again: one swap each way
        versions = [event.bundle_version for event in kiosk.events]
        changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert changes in (["v1", "v2", "v1"], ["v1"]), versions  # no item may have been decided while v2 ran
        assert kiosk.labels_follow_the_video() and kiosk.agent.store.state.current == "v1"


def test_a_foreign_signature_a_wrong_sha256_and_an_unreachable_url_are_refused_and_said(fleet, tmp_path, retailer_key):
    from tillsight.signing import generate_keys

    (kiosk,) = fleet["start"]("k1")
    generate_keys(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    view = FleetView(fleet["options"].broker, "test").connect()
    try:
        unsigned = fleet["publish"]("unsigned", demo_bundle_copy(tmp_path / "unsigned", None), "v2-unsigned")
        view.publish_desired("k1", unsigned)
        assert wait_until(
            lambda: kiosk.agent.reported().desired == "v2-unsigned" and kiosk.agent.reported().status is KioskStatus.REFUSED, 30
        )
        assert "not signed" in kiosk.agent.reported().reason, kiosk.agent.reported().reason

        foreign = fleet["publish"]("foreign", demo_bundle_copy(tmp_path / "foreign", tmp_path / "other.pem"), "v2-foreign")
        view.publish_desired("k1", foreign)
        assert wait_until(
            lambda: kiosk.agent.reported().desired == "v2-foreign" and kiosk.agent.reported().status is KioskStatus.REFUSED, 30
        )
        assert "trusted" in kiosk.agent.reported().reason, kiosk.agent.reported().reason

        good = fleet["publish"]("v2", demo_bundle_copy(tmp_path / "v2", retailer_key[0]), "v2")
        wrong = DesiredState(version="v2-wrong", url=good.url, sha256="0" * 64, bytes=good.bytes)
        view.publish_desired("k1", wrong)
        assert wait_until(
            lambda: kiosk.agent.reported().desired == "v2-wrong" and kiosk.agent.reported().status is KioskStatus.REFUSED, 30
        )
        assert "not the announced" in kiosk.agent.reported().reason

        unreachable = DesiredState(version="v3", url="http://127.0.0.1:9/v3.tar", sha256=good.sha256, bytes=good.bytes)
        view.publish_desired("k1", unreachable)
        assert wait_until(lambda: "cannot be reached" in kiosk.agent.reported().reason, 30)
        assert kiosk.agent.reported().status is KioskStatus.DOWNLOADING  # it keeps trying; the old bundle runs
        view.publish_desired("k1", good)  # a newer desired state replaces the unreachable one
        assert wait_until(lambda: kiosk.agent.reported().current == "v2", 60)
    finally:
        view.close()
    assert kiosk.kiosk.version == "v2" and kiosk.labels_follow_the_video()


def test_a_broker_restarted_mid_rollout_does_not_stop_it(fleet, retailer_key):
    kiosks = fleet["start"]("k1", "k2")
    state = fleet["publish"]("v2", demo_bundle_copy(fleet["tmp"] / "v2", retailer_key[0]), "v2")
    options = RolloutOptions(
        broker=fleet["options"].broker, kiosks=("k1", "k2"), canary=0.5, waves=2, wave_timeout_s=120, discover_s=1.0
    )
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=rollout(state, options, progress=lambda line: None)))
    thread.start()
    assert wait_until(lambda: kiosks[0].agent.reported().desired == "v2", 30)  # the canary has its desired state
    fleet["broker"].kill()
    time.sleep(2.0)
    fleet["broker"].start()  # same port; its persistence kept the retained states
    thread.join(180)
    assert outcome["result"].completed, outcome["result"]
    assert all(k.kiosk.version == "v2" and k.labels_follow_the_video() for k in kiosks)


class _BreakingCamera(Source):
    """The demo video in a loop, paced; once ``broken`` is set its frames come as float32 (every frame then fails)."""

    def __init__(self):
        import cv2

        capture = cv2.VideoCapture(str(ASSETS / SCRIPT.video))
        self.frames = []
        while (read := capture.read())[0]:
            self.frames.append(read[1])
        self.source_id, self.live, self.fps, self.stills = "breaking", False, 30.0, False
        self.broken = threading.Event()

    def open(self):
        self.index = 0

    def read(self):
        time.sleep(1 / 30)
        frame = self.frames[self.index % len(self.frames)]
        self.index += 1
        return frame.astype(np.float32) if self.broken.is_set() else frame

    def close(self):
        pass


def test_frames_failing_after_a_swap_roll_the_kiosk_back_to_the_previous_bundle(fleet, tmp_path, retailer_key):
    broker = fleet["broker"]
    camera = _BreakingCamera()
    options = FleetOptions(
        broker=MqttOptions.from_url(f"mqtt://127.0.0.1:{broker.port}/fleet"),
        kiosk_id="k1",
        store=tmp_path / "k1",
        trusted_keys=(retailer_key[1],),
        acceptance=AcceptanceOptions(benchmark_frames=0),
        crash_failures=5,
    )
    agent = FleetAgent(options)
    factory = demo_bundle_copy(tmp_path / "own", retailer_key[0])
    pipeline = PipelineOptions(checkout=CheckoutOptions(roi=SCRIPT.roi), metrics_interval=0)
    kiosk = Kiosk(
        agent.kiosk_options(KioskOptions(factory, source=camera, pipeline=pipeline, version="v1")), on_frame=agent.on_frame
    )
    kiosk.start()
    agent.start(kiosk)
    view = FleetView(fleet["options"].broker, "test").connect()
    try:
        view.publish_desired("k1", fleet["publish"]("v2", demo_bundle_copy(tmp_path / "v2", retailer_key[0]), "v2"))
        assert wait_until(lambda: agent.reported().current == "v2", 60)
        camera.broken.set()  # the new bundle's frames fail: five of them roll it back
        assert wait_until(lambda: agent.reported().status is KioskStatus.ROLLED_BACK, 60)
        reported = agent.reported()
        assert reported.current == "v1" and kiosk.version == "v1" and "frames failed" in reported.reason
        assert agent.store.state.current == "v1" and "v2" in agent.store.state.refused
        assert wait_until(
            lambda: view.reported.get("k1") is not None and view.reported["k1"].status is KioskStatus.ROLLED_BACK, 10
        )
    finally:
        view.close()
        agent.stop()
        kiosk.close()
