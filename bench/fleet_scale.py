"""The fleet at scale, simulated: the real kiosk agent of N kiosks against one local mosquitto.

    python bench/fleet_scale.py --kiosks 200

Each simulated kiosk is a real :class:`~tillsight.kiosk.Kiosk` and :class:`~tillsight.fleet.FleetAgent`
in this process, with the package's fake backend in place of a model (``tillsight.testing``) and
a camera that shows an empty tray at 2 fps. The bundles are small signed bundles (8x8 input,
a conformance set of 4 inputs) served by a local HTTP server; every kiosk downloads,
verifies (sha256, Ed25519 signature), accepts (conformance) and swaps the new one in.

Measured: the time from the first desired state to every kiosk running the new bundle (one
wave), the messages and bytes of the fleet topics per kiosk (reported states and health
reports; the checkout events go to the store's own topic and are not counted), and
mosquitto's resident memory with every kiosk connected. The figures go to
``bench/FLEET.md`` and into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from sections import publish

from tillsight.bundle import read_bundle
from tillsight.classifier import Classifier
from tillsight.conformance import add_conformance_set
from tillsight.demo import ASSETS
from tillsight.fleet import AcceptanceOptions, FleetAgent, FleetOptions, RolloutOptions, desired_state, pack_bundle, rollout
from tillsight.kiosk import Kiosk, KioskOptions
from tillsight.pipelines import CaptureOptions, PipelineOptions, Source
from tillsight.pipelines.mqtt import MqttOptions
from tillsight.runtimes.base import TensorSpec
from tillsight.signing import generate_keys, load_trusted_keys, sign_bundle
from tillsight.testing import FakeBackend

HERE = Path(__file__).resolve().parent
LABELS = ("apple", "banana", "carton", "empty")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _respond(tensor: np.ndarray) -> np.ndarray:
    """The fake model: scores from the mean of each colour channel (the same on every kiosk, as a runtime would be)."""
    means = tensor.reshape(-1, 3).mean(axis=0)
    logits = np.array([means[0], means[1], means[2], 0.5 * means.sum()], np.float32)
    scores = np.exp(logits - logits.max())
    return (scores / scores.sum())[np.newaxis]


def _fake_loader(keys, bundle_dir: Path, version: str | None) -> Classifier:
    bundle = read_bundle(bundle_dir, trusted_keys=keys)  # sha256 of every artifact, the signature: as on a kiosk
    manifest = bundle.manifest
    spec = manifest.input
    backend = FakeBackend(
        _respond, TensorSpec((1, spec.height, spec.width, 3), "float32"), TensorSpec((1, len(LABELS)), "float32")
    )
    return Classifier(backend, manifest.labels, spec, bundle, version)


def _mini_bundle(folder: Path, template: Path, key: Path, note: str) -> Path:
    """A signed bundle of the fake model: the template's manifest with an 8x8 float input and a tiny model file."""
    folder.mkdir(parents=True)
    manifest = json.loads((template / "manifest.json").read_text())
    model = note.encode() * 64
    (folder / "model.tflite").write_bytes(model)
    manifest["labels"] = list(LABELS)
    manifest["input"].update(height=8, width=8, dtype="float32", scale=0.0, zero_point=0)
    manifest["output"].update(num_classes=len(LABELS), dtype="float32", scale=0.0, zero_point=0)
    manifest["artifacts"] = {"model.tflite": {"sha256": hashlib.sha256(model).hexdigest(), "bytes": len(model)}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    classifier = _fake_loader((), folder, None)
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) * np.array(c, np.uint8)
        for c in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1])
    ]
    add_conformance_set(folder, classifier, frames, 4)
    sign_bundle(folder, key)
    return folder


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the standard library's name
        pass


class _EmptyTray(Source):
    """A camera looking at an empty tray, 2 frames a second."""

    def __init__(self) -> None:
        self.source_id, self.live, self.fps, self.stills = "sim", True, 2.0, False
        self.image = np.full((48, 64, 3), 120, np.uint8)

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        time.sleep(0.5)
        frame = self.image.copy()
        frame[0, 0] = int(time.monotonic() * 1000) % 256  # sensor noise: a live camera, not a frozen stream
        return frame

    def close(self) -> None:
        pass


class _Counter:
    """Counts every message on the fleet topics, by kind, with their bytes."""

    def __init__(self, port: int, prefix: str) -> None:
        import paho.mqtt.client as paho

        self.counts: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="counter")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/kiosks/+/+", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        if message.retain:  # retained copies replayed at subscription time are not traffic
            return
        with self.lock:
            self.counts.setdefault(message.topic.rsplit("/", 1)[-1], []).append(len(message.payload))

    def snapshot(self) -> dict[str, tuple[int, int]]:
        with self.lock:
            return {kind: (len(sizes), sum(sizes)) for kind, sizes in self.counts.items()}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiosks", type=int, default=200)
    parser.add_argument("--health-interval", type=float, default=20.0, help="seconds between health reports in the simulation")
    parser.add_argument("--watch", type=float, default=60.0, help="seconds of steady state to count health reports over")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-scale-"))
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10000\n")
    broker = subprocess.Popen(
        [mosquitto, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    served = work / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    generate_keys(work / "key.pem", work / "key.pub.pem")
    keys = load_trusted_keys([work / "key.pub.pem"])
    template = ASSETS / "classifier"
    v1 = _mini_bundle(work / "v1", template, work / "key.pem", "v1")
    v2 = _mini_bundle(work / "v2", template, work / "key.pem", "v2")
    pack_bundle(v2, served / "v2.tar")
    state = desired_state(served / "v2.tar", f"http://127.0.0.1:{httpd.server_address[1]}/v2.tar", "v2")
    url = f"mqtt://127.0.0.1:{port}/fleet"
    rss_idle = _rss_mb(broker.pid)
    counter = _Counter(port, "fleet")

    started = time.monotonic()
    members = []
    for index in range(args.kiosks):
        kiosk_id = f"k{index:04d}"
        options = FleetOptions(
            broker=MqttOptions.from_url(url),
            kiosk_id=kiosk_id,
            store=work / "kiosks" / kiosk_id,
            trusted_keys=tuple(keys),
            acceptance=AcceptanceOptions(benchmark_frames=0),
            health_interval_s=args.health_interval,
        )
        agent = FleetAgent(options)
        pipeline = PipelineOptions(capture=CaptureOptions(drop_frames=True), metrics_interval=0)
        kiosk = Kiosk(
            agent.kiosk_options(KioskOptions(v1, source=_EmptyTray(), pipeline=pipeline, version="v1")),
            sinks=[agent.observe],
            on_frame=agent.on_frame,
            loader=functools.partial(_fake_loader, keys),
        )
        kiosk.start()
        agent.start(kiosk)
        members.append((agent, kiosk))
    deadline = time.monotonic() + 300
    while counter.snapshot().get("reported", (0, 0))[0] < args.kiosks and time.monotonic() < deadline:
        time.sleep(0.2)
    connected_s = time.monotonic() - started
    rss_connected = _rss_mb(broker.pid)
    before = counter.snapshot()
    rollout_options = RolloutOptions(
        broker=MqttOptions.from_url(url),
        kiosks=tuple(f"k{i:04d}" for i in range(args.kiosks)),
        canary=1.0,
        waves=1,
        wave_timeout_s=600,
    )
    result = rollout(state, rollout_options, progress=lambda line: None)
    after_rollout = counter.snapshot()
    rss_rollout = _rss_mb(broker.pid)
    time.sleep(args.watch)
    steady = counter.snapshot()
    for agent, kiosk in members:
        agent.stop(1.0)
        kiosk.close()
    counter.client.disconnect()
    broker.kill()
    httpd.shutdown()

    running = sum(o.outcome == "running" for o in result.outcomes)
    rollout_msgs = {k: (after_rollout.get(k, (0, 0))[0] - before.get(k, (0, 0))[0]) for k in ("reported", "desired", "health")}
    health_count = steady.get("health", (0, 0))[0] - after_rollout.get("health", (0, 0))[0]
    health_bytes = steady.get("health", (0, 1))[1] - after_rollout.get("health", (0, 0))[1]
    health_size = health_bytes / max(health_count, 1)
    health_per_kiosk_hour_at_300s = 3600 / 300
    reported_sizes = after_rollout.get("reported", (1, 0))
    figures = {
        "kiosks": args.kiosks,
        "connected_s": round(connected_s, 1),
        "rollout_s": round(result.seconds - rollout_options.discover_s, 1),  # from the first desired state
        "running": running,
        "rollout_messages_per_kiosk": {k: round(v / args.kiosks, 2) for k, v in rollout_msgs.items()},
        "reported_bytes": round(reported_sizes[1] / max(reported_sizes[0], 1)),
        "health_bytes": round(health_size),
        "health_per_kiosk_measured": round(health_count / args.kiosks / args.watch * args.health_interval, 2),
        "health_per_kiosk_hour_at_300s": health_per_kiosk_hour_at_300s,
        "broker_rss_mb": {
            "idle": round(rss_idle, 1),
            "connected": round(rss_connected, 1),
            "after_rollout": round(rss_rollout, 1),
        },
    }
    print(json.dumps(figures, indent=2))
    publish(_section(figures), HERE / "FLEET.md")
    shutil.rmtree(work, ignore_errors=True)


def _section(figures: dict) -> str:
    per_kiosk = figures["rollout_messages_per_kiosk"]
    health_hour = figures["health_per_kiosk_hour_at_300s"]
    kb_hour = (health_hour * figures["health_bytes"]) / 1024
    rss = figures["broker_rss_mb"]
    per_kiosk_kb = (rss["after_rollout"] - rss["idle"]) * 1024 / figures["kiosks"]
    return f"""## Fleet at scale (simulated)

`python bench/fleet_scale.py --kiosks {figures["kiosks"]}` ({time.strftime("%Y-%m-%d")}, this host): the real kiosk agent of
{figures["kiosks"]} kiosks in one process, each with the fake backend in place of a model and an empty tray at 2 fps,
against one local mosquitto 2.0.11; small signed bundles over local HTTP.

| what | measured |
|---|---|
| all {figures["kiosks"]} kiosks connected and reporting | {figures["connected_s"]} s after the first started |
| one-wave rollout to every kiosk (download, sha256, signature, conformance, swap) | {figures["rollout_s"]} s, {figures["running"]} of {figures["kiosks"]} running the new bundle |
| fleet messages per kiosk for that rollout | {per_kiosk["desired"]} desired, {per_kiosk["reported"]} reported ({figures["reported_bytes"]} bytes each) |
| health reports | {figures["health_bytes"]} bytes each; at the default 300 s, {health_hour:.0f} per kiosk per hour ({kb_hour:.1f} KB) |
| mosquitto resident memory | {rss["idle"]} MB idle, {rss["connected"]} MB with every kiosk connected, {rss["after_rollout"]} MB after the rollout (~{per_kiosk_kb:.0f} KB per kiosk) |
"""


if __name__ == "__main__":
    main()
