"""MQTT delivery against a real mosquitto process: outages of the broker and of the kiosk lose no event."""

from __future__ import annotations

import collections
import dataclasses
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tillsight.demo import ASSETS, demo_script
from tillsight.pipelines.events import ProductRecognized
from tillsight.pipelines.mqtt import MqttOptions, MqttSink
from tillsight.pipelines.outbox import Outbox

from .broker import Broker, Consumer, free_port, needs_mosquitto, needs_paho

pytestmark = [needs_mosquitto, needs_paho]

SCRIPT = demo_script()
ROI = ",".join(str(v) for v in SCRIPT.roi)
BASKET = collections.Counter(p.label for p in SCRIPT.placements)


def events(count, start=0):
    return [ProductRecognized("Banana", 0.9, float(k), float(k) + 0.5, 5, "lane-1") for k in range(start, start + count)]


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.kill()


def test_events_reach_the_broker_with_their_ids_and_leave_the_outbox_once_acknowledged(broker, tmp_path):
    consumer = Consumer(broker.port)
    sent = events(12)
    with MqttSink(MqttOptions.from_url(broker.url, outbox=tmp_path / "outbox.sqlite")) as sink:
        for event in sent:
            sink(event)
        received = consumer.wait_for(12)
        deadline = time.monotonic() + 10
        while sink.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.pending == 0
    consumer.close()
    assert set(received) == {event.event_id for event in sent}
    assert received[sent[3].event_id] == sent[3].to_dict()


def test_each_lane_publishes_to_its_own_topic_with_a_lane_placeholder(broker, tmp_path):
    lane_two = Consumer(broker.port, topic="store/12/lane/2")
    sent = [dataclasses.replace(event, lane=lane) for event, lane in zip(events(7), "1212122", strict=True)]
    url = broker.url.replace("/lane/1", "/lane/{lane}")
    with MqttSink(MqttOptions.from_url(url, outbox=tmp_path / "outbox.sqlite")) as sink:
        for event in sent:
            sink(event)
        # The broker keeps one publisher's messages on a topic in order: a lane-1 event sent to lane 2's
        # topic would arrive before the last event, which is lane 2's.
        received = lane_two.wait_for(4)
    lane_two.close()
    assert sent[-1].event_id in received
    assert set(received) == {event.event_id for event in sent if event.lane == "2"}


def test_events_wait_in_the_outbox_while_the_broker_is_down_and_go_when_it_comes_back(tmp_path):
    broker = Broker(tmp_path / "broker")
    sink = MqttSink(MqttOptions.from_url(broker.url, outbox=tmp_path / "outbox.sqlite", reconnect_max_s=1))
    try:
        for event in events(5):
            sink(event)
        assert sink.pending == 5  # on disk when the call returns; nobody acknowledges them until a broker is up
        broker.start()
        consumer = Consumer(broker.port)
        for event in events(3, start=5):
            sink(event)
        # The five older events were published before the consumer subscribed; the broker keeps none of
        # them for it, but each left the outbox only once acknowledged.
        assert len(consumer.wait_for(3)) >= 3
        deadline = time.monotonic() + 10
        while sink.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.pending == 0 and sink.published >= 8
    finally:
        sink.close(timeout=1)
        broker.kill()


def test_events_on_disk_when_the_kiosk_is_sigkilled_are_sent_first_by_the_next_run(tmp_path):
    outbox, port = tmp_path / "outbox.sqlite", free_port()
    url = f"mqtt://127.0.0.1:{port}/store/12/lane/1"
    kiosk = textwrap.dedent(f"""
        import sys, time
        from tillsight.pipelines.events import ProductRecognized
        from tillsight.pipelines.mqtt import MqttOptions, MqttSink
        sink = MqttSink(MqttOptions.from_url({url!r}, outbox={str(outbox)!r}))
        for k in range(7):
            sink(ProductRecognized("Carrots", 0.8, float(k), float(k) + 0.5, 5, "lane-1"))
        print("stored", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", kiosk], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "stored"  # acknowledged to the pipeline: on disk
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert len(Outbox(outbox)) == 7
    broker = Broker(tmp_path / "broker", port).start()
    try:
        consumer = Consumer(port)
        with MqttSink(MqttOptions.from_url(url, outbox=outbox)) as sink:
            sink(ProductRecognized("Pineapple", 0.9, 99.0, 99.5, 5, "lane-1"))
            received = consumer.wait_for(8)
        consumer.close()
    finally:
        broker.kill()
    labels = [message["label"] for message in sorted(received.values(), key=lambda m: m["first_seen"])]
    assert labels == ["Carrots"] * 7 + ["Pineapple"]
    assert len(Outbox(outbox)) == 0


def _kiosk(broker, outbox, *extra):
    command = [
        sys.executable,
        "-m",
        "tillsight",
        "run",
        str(ASSETS / "classifier"),
        "--source",
        str(ASSETS / "checkout.mp4"),
        "--roi",
        ROI,
        "--metrics-interval",
        "0",
        "--mqtt",
        broker.url,
        "--mqtt-outbox",
        str(outbox),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _basket(received):
    return collections.Counter(message["label"] for message in received.values())


@pytest.mark.integration
def test_the_broker_killed_mid_run_and_restarted_loses_no_event(broker, tmp_path):
    consumer = Consumer(broker.port)
    kiosk = _kiosk(broker, tmp_path / "outbox.sqlite", "--speed", "3", "--mqtt-drain-timeout", "30")
    try:
        assert consumer.wait_for(2, timeout=60), "no event reached the consumer"
        broker.kill()
        time.sleep(3)  # events go on being recognized meanwhile
        broker.start()
        _, stderr = kiosk.communicate(timeout=120)
    finally:
        kiosk.kill()
    assert kiosk.returncode == 0, stderr
    assert "lost the MQTT broker" in stderr
    assert _basket(consumer.wait_for(sum(BASKET.values()))) == BASKET
    consumer.close()


@pytest.mark.integration
def test_the_kiosk_sigkilled_mid_run_and_started_again_loses_no_event(broker, tmp_path):
    consumer = Consumer(broker.port)
    outbox = tmp_path / "outbox.sqlite"
    kiosk = _kiosk(broker, outbox, "--speed", "3")
    try:
        assert consumer.wait_for(2, timeout=60), "no event reached the consumer"
        kiosk.send_signal(signal.SIGKILL)
        kiosk.wait(10)
    finally:
        kiosk.kill()
    assert len(consumer.by_id()) < sum(BASKET.values())  # killed before the end of the video
    again = _kiosk(broker, outbox)
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    received = consumer.wait_for(sum(BASKET.values()))
    consumer.close()
    assert _basket(received) == BASKET  # duplicates dropped by id: exactly the video's basket
    assert len(consumer.messages) >= len(received)
