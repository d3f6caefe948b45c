"""A real mosquitto broker process for the MQTT tests, and a consumer that records what it gets."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)"
)
needs_paho = pytest.mark.skipif(
    importlib.util.find_spec("paho") is None,
    reason="MQTT needs paho-mqtt: pip install 'tillsight[mqtt]' (a device-side install has none)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:port that persists its sessions, so a restart keeps the consumer's subscription."""

    def __init__(self, folder: Path, port: int | None = None):
        self.port = port or free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\nlog_dest file {folder}/mosquitto.log\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {(self.folder / 'mosquitto.log').read_text()}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}/store/12/lane/1"


class Consumer:
    """Subscribes with QoS 1 and a persistent session; keeps every message it gets, duplicates included."""

    def __init__(self, port: int, topic: str = "store/12/lane/1"):
        import paho.mqtt.client as paho

        self.messages: list[dict] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"consumer-{port}", clean_session=False)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):  # the broker's SUBACK: from here on, every publish reaches us
            raise RuntimeError(f"no SUBACK from the broker on port {port} for {topic}")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))

    def by_id(self) -> dict[str, dict]:
        with self._lock:
            return {message["id"]: message for message in self.messages}

    def wait_for(self, count: int, timeout: float = 30.0) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while len(self.by_id()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.by_id()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
