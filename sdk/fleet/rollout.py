"""The backend side of a fleet: roll a bundle out in waves, watch what kiosks report, promote or roll back.

::

    rollout ─► PREFIX/kiosks/ID/desired (retained), one wave at a time: a canary, then equal waves
            ◄─ PREFIX/kiosks/ID/reported (retained): running the new version, or refused / rolled back, and why
    a wave whose failed share passes ``abort_if_failed`` (or that does not answer in time) aborts the
    rollout: every kiosk it touched gets its previous desired state back (or, where it had none, the
    version it ran before, which it keeps in its store).

No server of tillsight's own: the broker (mosquitto, EMQX, HiveMQ) carries the states, and any
HTTP server or object store serves the packed bundle.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..bundle import sha256_of_file
from ..errors import FleetError, OptionsError
from .messages import DesiredState, Health, KioskStatus, ReportedState, decode, encode, topic
from .store import BundleStore

__all__ = ["FleetView", "KioskOutcome", "RolloutOptions", "RolloutResult", "fleet_status", "rollout"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RolloutOptions:
    """How to roll a bundle out.

    Attributes:
        broker: The broker and fleet prefix (an ``MqttOptions`` whose ``topic`` is the prefix).
        kiosks: The kiosks to update (ids); empty with ``group``: every kiosk reporting that group.
        group: Take the kiosks whose reported state names this group.
        canary: Share of the kiosks in the first wave (at least one kiosk).
        waves: Waves in all, the canary included.
        abort_if_failed: Abort when more than this share of a wave's kiosks refused, rolled back or did not answer.
        wave_timeout_s: Seconds a wave may take (download, acceptance and swap on every kiosk).
        discover_s: Seconds to collect the retained reported and desired states before the first wave.
    """

    broker: Any
    kiosks: tuple[str, ...] = ()
    group: str = ""
    canary: float = 0.05
    waves: int = 3
    abort_if_failed: float = 0.10
    wave_timeout_s: float = 900.0
    discover_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.kiosks and not self.group:
            raise OptionsError("a rollout needs its kiosks: --kiosks FILE (one id per line) or --group G")
        if not 0.0 < self.canary <= 1.0:
            raise OptionsError(f"--canary must be a share of the kiosks in (0%, 100%], got {self.canary:.0%}")
        if self.waves < 1:
            raise OptionsError(f"--waves must be at least 1, got {self.waves}")
        if not 0.0 <= self.abort_if_failed < 1.0:
            raise OptionsError(f"--abort-if must be failed>P% with P in [0, 100), got {self.abort_if_failed:.0%}")
        for kiosk in self.kiosks:
            BundleStore.check_version(kiosk)

    @property
    def prefix(self) -> str:
        return str(self.broker.topic).rstrip("/")


@dataclasses.dataclass(frozen=True)
class KioskOutcome:
    """What one kiosk did with the rollout: ``running`` the new version, ``refused``, ``rolled-back``, ``no answer``."""

    kiosk_id: str
    wave: int
    outcome: str
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class RolloutResult:
    """The rollout's end: promoted to every kiosk, or aborted (and rolled back) at a wave."""

    rollout_id: str
    version: str
    completed: bool
    aborted_wave: int | None
    reason: str
    outcomes: tuple[KioskOutcome, ...]
    seconds: float


def parse_abort_if(text: str) -> float:
    """``failed>10%`` → 0.10.

    Raises:
        OptionsError: Not of that form.
    """
    name, separator, value = text.replace(" ", "").partition(">")
    try:
        share = float(value.rstrip("%")) / 100.0
    except ValueError:
        share = -1.0
    if name != "failed" or not separator or not value.endswith("%") or not 0.0 <= share < 1.0:
        raise OptionsError(f"--abort-if {text!r}: write failed>P% (P from 0 to 99), e.g. failed>10%")
    return share


def desired_state(packed: str | Path, url: str, version: str | None = None, rollout_id: str = "") -> DesiredState:
    """The desired state naming a packed bundle (``tillsight fleet pack``) served at ``url``.

    Raises:
        OptionsError: The packed file is missing, or the URL is not http(s).
    """
    packed = Path(packed)
    if not packed.is_file():
        raise OptionsError(f"{packed} does not exist; pack the bundle first: tillsight fleet pack BUNDLE {packed}")
    if not url.startswith(("http://", "https://")):
        raise OptionsError(f"--url {url!r} must be the http:// or https:// address where {packed.name} is served")
    sha256 = sha256_of_file(packed)
    version = BundleStore.check_version(version or sha256[:12])
    return DesiredState(version=version, url=url, sha256=sha256, bytes=packed.stat().st_size, rollout=rollout_id)


class FleetView:
    """The retained states of a fleet, kept current from the broker."""

    def __init__(self, broker: Any, client_name: str, health: bool = False):
        from ..pipelines.mqtt import mqtt_client

        self.broker = broker
        self.prefix = str(broker.topic).rstrip("/")
        self.reported: dict[str, ReportedState] = {}
        self.desired: dict[str, DesiredState] = {}
        self.health: dict[str, Health] = {}
        self.changed = threading.Condition()
        self._subscribed = threading.Event()
        # back within 5 s of a broker restart: a rollout is watching
        client = mqtt_client(
            dataclasses.replace(broker, reconnect_min_s=1.0, reconnect_max_s=5.0), f"{client_name}-{uuid.uuid4().hex[:8]}"
        )
        kinds = ["reported", "desired"] + (["health"] if health else [])
        client.on_connect = lambda c, *_: c.subscribe([(topic(self.prefix, "+", kind), 1) for kind in kinds])
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        self.client = client

    def connect(self, timeout: float = 10.0) -> FleetView:
        """Connect and subscribe; raise FleetError if the broker does not answer."""
        self.client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise FleetError(f"the fleet broker {self.broker.address} did not answer in {timeout:.0f} s; check --broker")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        parts = message.topic.split("/")
        if len(parts) < 3 or parts[-3] != "kiosks":
            return
        kiosk, kind = parts[-2], parts[-1]
        try:
            if not message.payload:
                if kind == "desired":
                    self.desired.pop(kiosk, None)
                return
            if kind == "reported":
                self.reported[kiosk] = decode(message.payload, ReportedState, message.topic)
            elif kind == "desired":
                self.desired[kiosk] = decode(message.payload, DesiredState, message.topic)
            elif kind == "health":
                self.health[kiosk] = decode(message.payload, Health, message.topic)
        except FleetError as exc:
            logger.warning("%s", exc)
            return
        with self.changed:
            self.changed.notify_all()

    def publish_desired(self, kiosk: str, state: DesiredState | None, timeout: float = 10.0) -> None:
        """Publish (retained, QoS 1) and wait for the broker's acknowledgement; None clears the retained state."""
        payload = encode(state) if state is not None else b""
        info = self.client.publish(topic(self.prefix, kiosk, "desired"), payload, qos=1, retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise FleetError(f"the broker {self.broker.address} did not take the desired state of {kiosk} in {timeout:.0f} s")


def _waves(kiosks: Sequence[str], canary: float, waves: int) -> list[list[str]]:
    first = max(1, math.ceil(canary * len(kiosks)))
    rest = list(kiosks[first:])
    groups = [list(kiosks[:first])]
    remaining_waves = max(1, waves - 1)
    size = math.ceil(len(rest) / remaining_waves) if rest else 0
    groups += [rest[i : i + size] for i in range(0, len(rest), size)] if size else []
    return groups


def rollout(state: DesiredState, options: RolloutOptions, progress: Callable[[str], None] = logger.info) -> RolloutResult:
    """Publish ``state`` to the kiosks in waves, promote healthy waves, and roll every touched kiosk back on an abort.

    Args:
        state: From :func:`desired_state`.
        options: Kiosks, waves and the abort rule.
        progress: Called with one line per step (the CLI prints them).

    Returns:
        What happened; an abort is a result, not an exception.

    Raises:
        FleetError: The broker cannot be reached, or no kiosk matches ``group``.
    """
    started = time.monotonic()
    rollout_id = state.rollout or uuid.uuid4().hex[:12]
    state = DesiredState(version=state.version, url=state.url, sha256=state.sha256, bytes=state.bytes, rollout=rollout_id)
    view = FleetView(options.broker, "tillsight-rollout").connect()
    try:
        time.sleep(options.discover_s)  # the retained states arrive
        kiosks = list(options.kiosks) or sorted(k for k, r in view.reported.items() if r.group == options.group)
        if not kiosks:
            raise FleetError(f"no kiosk reports group {options.group!r} on {options.broker.address}")
        before = {kiosk: (view.desired.get(kiosk), view.reported.get(kiosk)) for kiosk in kiosks}
        outcomes: list[KioskOutcome] = []
        touched: list[str] = []
        for number, wave in enumerate(_waves(kiosks, options.canary, options.waves), start=1):
            progress(f"wave {number}: {len(wave)} kiosks ({', '.join(wave)})")
            for kiosk in wave:
                view.publish_desired(kiosk, state)
                touched.append(kiosk)
            results = _await_wave(view, wave, number, state.version, options.wave_timeout_s)
            outcomes += results
            failed = [o for o in results if o.outcome != KioskStatus.RUNNING.value]
            for outcome in results:
                progress(f"  {outcome.kiosk_id}: {outcome.outcome}{f' ({outcome.reason})' if outcome.reason else ''}")
            if len(failed) / len(wave) > options.abort_if_failed:
                reason = f"{len(failed)} of {len(wave)} kiosks of wave {number} failed (abort if more than {options.abort_if_failed:.0%})"
                progress(f"aborted: {reason}; rolling back {len(touched)} kiosks")
                _roll_back(view, touched, before)
                return RolloutResult(
                    rollout_id, state.version, False, number, reason, tuple(outcomes), time.monotonic() - started
                )
            progress(f"wave {number} healthy: promoted")
        return RolloutResult(rollout_id, state.version, True, None, "", tuple(outcomes), time.monotonic() - started)
    finally:
        view.close()


def _await_wave(view: FleetView, wave: list[str], number: int, version: str, timeout: float) -> list[KioskOutcome]:
    deadline = time.monotonic() + timeout
    done: dict[str, KioskOutcome] = {}
    with view.changed:
        while len(done) < len(wave):
            for kiosk in wave:
                report = view.reported.get(kiosk)
                if kiosk in done or report is None or report.desired != version:
                    continue
                if report.status is KioskStatus.RUNNING and report.current == version:
                    done[kiosk] = KioskOutcome(kiosk, number, KioskStatus.RUNNING.value)
                elif report.status in (KioskStatus.REFUSED, KioskStatus.ROLLED_BACK):
                    done[kiosk] = KioskOutcome(kiosk, number, report.status.value, report.reason)
            left = deadline - time.monotonic()
            if len(done) == len(wave) or left <= 0:
                break
            view.changed.wait(min(left, 1.0))
    for kiosk in wave:
        if kiosk not in done:
            done[kiosk] = KioskOutcome(kiosk, number, "no answer", f"no report of version {version} within {timeout:.0f} s")
    return [done[kiosk] for kiosk in wave]


def _roll_back(view: FleetView, touched: list[str], before: dict[str, tuple[DesiredState | None, ReportedState | None]]) -> None:
    """Every touched kiosk gets its previous desired state, or the version it ran before (from its own store)."""
    for kiosk in touched:
        desired, reported = before[kiosk]
        if desired is None and reported is not None and reported.current:
            desired = DesiredState(version=reported.current, url="", sha256="", bytes=0, rollout="rollback")
        view.publish_desired(kiosk, desired)


def fleet_status(broker: Any, wait_s: float = 2.0) -> list[tuple[ReportedState, Health | None]]:
    """Every kiosk's retained reported state and last health report, by kiosk id.

    Raises:
        FleetError: The broker cannot be reached.
    """
    view = FleetView(broker, "tillsight-status", health=True).connect()
    try:
        time.sleep(wait_s)
        return [(view.reported[k], view.health.get(k)) for k in sorted(view.reported)]
    finally:
        view.close()
