"""Events to an MQTT broker, through a durable on-disk outbox (``pip install "tillsight[mqtt]"``).

::

    pipeline ─► MqttSink(event) ─► Outbox (SQLite, WAL, synced) ─► publisher thread ─► broker (QoS 1)
                 returns once the event is on disk          removed once the broker acknowledged it

An event is acknowledged to the pipeline only once it is on disk, so neither a broker or
network outage nor a power cut or a killed kiosk loses it: whatever is still in the outbox
when the sink starts again is sent first. Delivery is at least once; every event carries its
``id`` (see :mod:`tillsight.pipelines.events`), so a consumer drops duplicates by id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, OptionsError
from .events import Event
from .outbox import Outbox, default_outbox_path

__all__ = ["MqttOptions", "MqttSink", "mqtt_client"]

logger = logging.getLogger(__name__)

_BATCH = 32  # events published before waiting for their acknowledgements


#: Seconds after which a broker that has not answered is said to be unreachable.
UNREACHABLE_WARNING_S = 3.0


@dataclasses.dataclass(frozen=True)
class MqttOptions:
    """Where and how to publish.

    Attributes:
        host: Broker host name or address.
        port: Broker port (1883 for ``mqtt://``, 8883 for ``mqtts://`` unless given).
        topic: Topic every event is published to (no wildcards); ``{lane}`` in it becomes the
            event's lane id, ``1`` on a one-lane kiosk (``store/12/lane/{lane}``).
        tls: Connect with TLS (``mqtts://``).
        username: User name, or None for an anonymous broker.
        password: Password (with ``username``).
        ca_file: PEM file of the certificate authorities to trust (None: the system's).
        outbox: The outbox file (see :func:`~tillsight.pipelines.outbox.default_outbox_path`).
        keepalive: Seconds between keep-alive pings.
        reconnect_min_s: First wait before reconnecting; doubles after each failure...
        reconnect_max_s: ...up to this.
    """

    host: str
    topic: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_file: str | None = None
    outbox: Path = dataclasses.field(default_factory=default_outbox_path)
    keepalive: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise OptionsError("the MQTT broker has no host; write mqtt://HOST[:PORT]/TOPIC")
        if not self.topic or any(c in self.topic for c in "#+\0"):
            raise OptionsError(f"MQTT topic {self.topic!r} must be a plain topic such as store/12/lane/1 (no # or + wildcards)")
        if not 0 < self.port < 65536:
            raise OptionsError(f"MQTT port {self.port} is not a port number (1-65535)")
        if self.password is not None and self.username is None:
            raise OptionsError("an MQTT password needs a user name as well")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise OptionsError(f"MQTT CA file {self.ca_file} does not exist; pass a PEM file of the broker's CA")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise OptionsError("reconnect_min_s must be positive and at most reconnect_max_s")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttOptions:
        """Options from ``mqtt://[user[:password]@]host[:port]/topic`` (or ``mqtts://``).

        Raises:
            OptionsError: The URL is not of that form.
        """
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("mqtt", "mqtts"):
            raise OptionsError(f"{url!r} is not an MQTT URL; write mqtt://HOST[:PORT]/TOPIC or mqtts://...")
        try:
            port = parsed.port
        except ValueError:
            raise OptionsError(f"{url!r} has no valid port; write mqtt://HOST:1883/TOPIC") from None
        tls = parsed.scheme == "mqtts"
        fields: dict[str, Any] = {
            "host": parsed.hostname or "",
            "port": port or (8883 if tls else 1883),
            "topic": urllib.parse.unquote(parsed.path.lstrip("/")) + ("#" if "#" in url else ""),
            "tls": tls,
        }
        if parsed.username:
            fields["username"] = urllib.parse.unquote(parsed.username)
        if parsed.password:
            fields["password"] = urllib.parse.unquote(parsed.password)
        fields.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**fields)

    @property
    def address(self) -> str:
        """``mqtt://host:port/topic`` without credentials, for logs and messages."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.topic}"


def _paho() -> Any:
    try:
        import paho.mqtt.client as paho
    except ImportError as exc:
        raise BackendUnavailableError('MQTT needs paho-mqtt: pip install "tillsight[mqtt]"') from exc
    return paho


def mqtt_client(options: MqttOptions, client_id: str) -> Any:
    """A paho client (MQTT 3.1.1, callback API 2) with the options' credentials, TLS and reconnect backoff; not connected.

    Raises:
        BackendUnavailableError: paho-mqtt is not installed.
    """
    paho = _paho()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.tls:
        client.tls_set(ca_certs=options.ca_file)
    client.reconnect_delay_set(max(1, round(options.reconnect_min_s)), max(1, round(options.reconnect_max_s)))
    return client


class MqttSink:
    """Publishes each event (JSON, QoS 1) to a broker, through a durable :class:`Outbox`.

    Calling the sink stores the event on disk and returns; a thread of its own publishes the
    outbox, oldest first, and deletes each event once the broker acknowledges it. It
    reconnects with exponential backoff; the pipeline never waits for the network.
    """

    never_drop = True
    name = "mqtt"

    def __init__(self, options: MqttOptions | str, *, client_id: str = ""):
        """Args:
        options: :class:`MqttOptions`, or a URL for :meth:`MqttOptions.from_url`.
        client_id: MQTT client id (default: one chosen by the client library).

        Raises:
            OptionsError: A malformed URL or option.
            BackendUnavailableError: paho-mqtt is not installed.
            SinkError: The outbox cannot be opened.
        """
        self.options = MqttOptions.from_url(options) if isinstance(options, str) else options
        paho = _paho()
        self._success = paho.MQTT_ERR_SUCCESS
        self.outbox = Outbox(self.options.outbox)
        waiting = len(self.outbox)
        if waiting:
            logger.info("MQTT outbox %s holds %d events from an earlier run; sending them first", self.outbox.path, waiting)
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # MQTT message id -> outbox seq
        self._early_acks: set[int] = set()  # acknowledgements that came before publish() returned
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self.published = 0
        self._client = mqtt_client(self.options, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.connect_async(self.options.host, self.options.port, self.options.keepalive)
        self._client.loop_start()  # paho's network thread: reconnects with the backoff set above
        self._publisher = threading.Thread(target=self._publish_loop, name="tillsight-mqtt", daemon=True)
        self._publisher.start()
        self._unreachable = threading.Timer(UNREACHABLE_WARNING_S, self._warn_if_unreachable)
        self._unreachable.daemon = True
        self._unreachable.start()

    def _warn_if_unreachable(self) -> None:
        """Said a few seconds into a run, not at its end: the broker has not answered yet."""
        if not self._connected.is_set() and not self._closing.is_set():
            logger.warning(
                "MQTT broker %s has not answered in %.0f s; events wait in the outbox %s (%d so far) and go out once it does",
                self.options.address,
                UNREACHABLE_WARNING_S,
                self.outbox.path,
                self.pending,
            )

    # -- the pipeline's side ------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        payload = json.dumps(event.to_dict()).encode()
        self.outbox.put(event.event_id, self.options.topic.replace("{lane}", event.lane or "1"), payload)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by the broker."""
        return len(self.outbox)

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for the outbox to empty, then disconnect.

        What is still in the outbox stays there and is sent first by the next MqttSink on it.
        """
        self._unreachable.cancel()
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._closing.set()
        self._wake.set()
        self._publisher.join(max(0.1, deadline - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()
        left = self.pending
        if left:
            logger.warning(
                "%d events wait in the MQTT outbox %s for %s; the next run sends them first",
                left,
                self.outbox.path,
                self.options.address,
            )
        self.outbox.close()

    def __enter__(self) -> MqttSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- paho's network thread ----------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.error(
                "MQTT broker %s refused the connection: %s; check the user name, password and TLS options",
                self.options.address,
                reason_code,
            )
            return
        logger.info("connected to the MQTT broker %s", self.options.address)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        self._wake.set()
        if not self._closing.is_set():
            logger.warning(
                "lost the MQTT broker %s (%s); reconnecting, events wait in the outbox", self.options.address, reason_code
            )

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early_acks.add(mid)
                return
        self._acknowledged(seq)

    def _acknowledged(self, seq: int) -> None:
        self.outbox.remove(seq)
        with self._lock:
            self.published += 1
            if not self._inflight:
                self._wake.set()

    # -- the publisher thread -----------------------------------------------------------

    def _publish_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self._connected.is_set():
                continue
            try:
                self._publish_batch()
            except Exception as exc:  # the thread must outlive a broken database or client
                logger.error("MQTT publishing failed: %s; retrying", exc)
                time.sleep(1.0)

    def _publish_batch(self) -> None:
        """Publish the oldest events and wait for their acknowledgements (or a disconnect)."""
        rows = self.outbox.oldest(_BATCH)
        for seq, _, topic, payload in rows:
            info = self._client.publish(topic, payload, qos=1)
            if info.rc != self._success:  # disconnected meanwhile: the rest waits for the next connection
                break
            with self._lock:
                if info.mid in self._early_acks:
                    self._early_acks.discard(info.mid)
                    early = True
                else:
                    self._inflight[info.mid] = seq
                    early = False
            if early:
                self._acknowledged(seq)
        deadline = time.monotonic() + 30.0
        while self._connected.is_set() and not self._closing.is_set() and time.monotonic() < deadline:
            with self._lock:
                if not self._inflight:
                    break
            self._wake.wait(0.2)
            self._wake.clear()
        with self._lock:  # unacknowledged events stay in the outbox and go again
            self._inflight.clear()
            self._early_acks.clear()
        if rows:
            self._wake.set()
