"""``tillsight run --fleet``: kiosk processes on the demo video, a rollout to three of them, and a kiosk killed mid-swap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.broker import Broker, Consumer, needs_mosquitto, needs_paho
from tillsight.demo import ASSETS, demo_script
from tillsight.fleet import KioskStatus, desired_state, pack_bundle
from tillsight.fleet.rollout import FleetView
from tillsight.pipelines.mqtt import MqttOptions

from .helpers import HttpServer, demo_bundle_copy, needs_rangehttpserver, wait_until

pytestmark = [needs_mosquitto, needs_paho, needs_rangehttpserver, pytest.mark.integration]

SCRIPT = demo_script()
SEQUENCE = [placement.label for placement in SCRIPT.placements]


def _kiosk(kiosk_id: str, folder: Path, factory: Path, broker: Broker, public_key: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "tillsight", "run", str(factory),
        "--source", str(ASSETS / SCRIPT.video), "--roi", ",".join(str(v) for v in SCRIPT.roi),
        "--speed", "2", "--loop", "--metrics-interval", "0", "--bundle-version", "v1",
        "--fleet", f"mqtt://127.0.0.1:{broker.port}/fleet", "--kiosk-id", kiosk_id, "--fleet-store", str(folder / "store"),
        "--trusted-key", str(public_key), "--health-interval", "2",
        "--jsonl", str(folder / "events.jsonl"),
        "--mqtt", f"mqtt://127.0.0.1:{broker.port}/store/{kiosk_id}/events", "--mqtt-outbox", str(folder / "outbox.sqlite"),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(folder / "stderr.log", "ab"))  # noqa: SIM115


def _events(folder: Path) -> list[dict]:
    path = folder / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def setup(tmp_path: Path, retailer_key):
    broker = Broker(tmp_path / "broker").start()
    served = tmp_path / "served"
    served.mkdir()
    http = HttpServer(served)
    factory = demo_bundle_copy(tmp_path / "factory", retailer_key[0])
    pack_bundle(demo_bundle_copy(tmp_path / "v2", retailer_key[0]), served / "v2.tar")
    state = desired_state(served / "v2.tar", http.url("v2.tar"), "v2")
    processes: list[subprocess.Popen] = []
    yield broker, factory, state, processes, tmp_path
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    http.stop()
    broker.kill()


def test_a_rollout_to_three_kiosk_processes_completes_with_no_lost_event(setup, retailer_key, capsys):
    from tillsight.cli import main

    broker, factory, state, processes, tmp_path = setup
    consumer = Consumer(broker.port, "store/+/events")
    ids = ("k1", "k2", "k3")
    processes += [_kiosk(k, tmp_path / k, factory, broker, retailer_key[1]) for k in ids]
    assert wait_until(lambda: all(len(_events(tmp_path / k)) >= 1 for k in ids), 90), [
        (tmp_path / k / "stderr.log").read_text() for k in ids
    ]
    (tmp_path / "kiosks.txt").write_text("# the store's kiosks\nk1\nk2\nk3\n")
    command = ["fleet", "rollout", str(tmp_path / "served" / "v2.tar"), "--url", state.url, "--version", "v2"]
    command += ["--broker", f"mqtt://127.0.0.1:{broker.port}/fleet", "--kiosks", str(tmp_path / "kiosks.txt")]
    assert main([*command, "--canary", "5%", "--waves", "2", "--wave-timeout", "180"]) == 0
    out = capsys.readouterr().out
    assert "wave 1: 1 kiosks (k1)" in out and "wave 2: 2 kiosks (k2, k3)" in out and "3 kiosks run v2" in out, out
    assert main(["fleet", "status", "--broker", f"mqtt://127.0.0.1:{broker.port}/fleet"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(ids)]
    assert len(rows) == 3 and all(" running " in row and " v2 " in row and "100.0%" in row for row in rows), rows
    assert wait_until(lambda: all(any(e["bundle_version"] == "v2" for e in _events(tmp_path / k)) for k in ids), 90)
    for process in processes:
        process.send_signal(signal.SIGTERM)  # a service manager's stop: the kiosk drains its outbox and exits
    assert all(process.wait(60) == 0 for process in processes)
    written = {k: _events(tmp_path / k) for k in ids}
    received = consumer.wait_for(sum(len(events) for events in written.values()), 30)
    consumer.close()
    for kiosk, events in written.items():
        assert all(event["id"] in received for event in events), kiosk  # every audited event reached the broker
        versions = [event["bundle_version"] for event in events]
        assert versions == sorted(versions) and versions[0] == "v1" and versions[-1] == "v2", (kiosk, versions)
        labels = [event["label"] for event in events]
        assert labels == [SEQUENCE[i % len(SEQUENCE)] for i in range(len(labels))], (kiosk, labels)


def test_a_kiosk_killed_mid_swap_starts_again_on_a_working_bundle_and_takes_the_new_one(setup, retailer_key):
    broker, factory, state, processes, tmp_path = setup
    folder = tmp_path / "k1"
    processes.append(_kiosk("k1", folder, factory, broker, retailer_key[1]))
    view = FleetView(MqttOptions.from_url(f"mqtt://127.0.0.1:{broker.port}/fleet"), "test").connect()
    try:
        assert wait_until(lambda: "k1" in view.reported, 60)
        view.publish_desired("k1", state)
        assert wait_until(lambda: view.reported["k1"].status is KioskStatus.CHECKING, 60)
        os.kill(processes[0].pid, signal.SIGKILL)  # while it proves the new bundle, before the swap
        processes[0].wait(10)
        record = json.loads((folder / "store" / "state.json").read_text()) if (folder / "store" / "state.json").exists() else {}
        assert record.get("current", "") in ("", "v1")  # the record never names a bundle that was not swapped in
        processes.append(_kiosk("k1", folder, factory, broker, retailer_key[1]))
        assert wait_until(lambda: view.reported["k1"].status is KioskStatus.RUNNING and view.reported["k1"].current == "v2", 90)
    finally:
        view.close()
    assert wait_until(lambda: any(e["bundle_version"] == "v2" for e in _events(folder)), 60)
    processes[-1].send_signal(signal.SIGTERM)
    assert processes[-1].wait(60) == 0
    assert json.loads((folder / "store" / "state.json").read_text())["current"] == "v2"
