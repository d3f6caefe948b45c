"""What kiosks and the rollout say to each other over the broker: frozen msgspec Structs, decoded and validated here.

Topics under the fleet prefix (``--fleet mqtt://broker/PREFIX``), all QoS 1::

    PREFIX/kiosks/ID/desired    retained   DesiredState   the rollout's: which bundle this kiosk should run
    PREFIX/kiosks/ID/reported   retained   ReportedState  the kiosk's: what it runs, what it refused and why
    PREFIX/kiosks/ID/health     retained   Health         the kiosk's, every few minutes: speed, drops, drift

msgspec was chosen over pydantic for these: one small compiled wheel (aarch64 and armv7 too),
decoding straight into frozen typed Structs with the field path in its errors, and JSON
Their JSON Schemas are generated from the same types (:mod:`tillsight.json_schemas`).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from ..errors import FleetError

__all__ = [
    "AcceptanceFigures",
    "DesiredState",
    "DriftAlert",
    "Health",
    "KioskStatus",
    "ReportedState",
    "decode",
    "encode",
    "topic",
]


def topic(prefix: str, kiosk_id: str, kind: str) -> str:
    """``PREFIX/kiosks/ID/KIND`` (kind: ``desired``, ``reported`` or ``health``; ``+`` for every kiosk)."""
    return f"{prefix}/kiosks/{kiosk_id}/{kind}"


class DesiredState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """The bundle a kiosk should run, published retained by a rollout.

    Attributes:
        version: The bundle's version; every event the kiosk emits with it carries it.
        url: Where the packed bundle (``tillsight fleet pack``) is served, http:// or https://; empty when
            the kiosk keeps the version in its store (a rollback to the bundle it ran before).
        sha256: The sha256 of the packed file; a download that does not match is thrown away.
        bytes: Its size; a download that grows past it is stopped.
        rollout: The rollout's id (so reported states can be traced to it).
    """

    version: str
    url: str
    sha256: str
    bytes: int
    rollout: str = ""


class KioskStatus(str, enum.Enum):
    """What a kiosk is doing with its desired state."""

    RUNNING = "running"  # runs the desired version
    DOWNLOADING = "downloading"
    CHECKING = "checking"  # the acceptance check
    REFUSED = "refused"  # the desired bundle failed download, signature or acceptance; the old one runs
    ROLLED_BACK = "rolled-back"  # the new bundle failed after the swap; the previous one runs again


class AcceptanceFigures(msgspec.Struct, frozen=True, kw_only=True):
    """What a kiosk measured on a bundle before taking it.

    Attributes:
        conformance_inputs: Inputs of the bundle's conformance set.
        conformance_agreement: Percent of them whose top-1 here is the converting host's.
        required_agreement: What was required.
        p50_ms, p95_ms: Inference latency here.
        latency_budget_ms: The profile's budget (None: none).
        local_photos: Labeled photos of the kiosk's own camera checked (0: none).
        local_top1: Their top-1 (None without photos).
        required_local_top1: What was required of them (None without photos).
        passed: Whether every check passed.
        reason: What failed, in one line ("" when it passed).
    """

    conformance_inputs: int
    conformance_agreement: float
    required_agreement: float
    p50_ms: float
    p95_ms: float
    latency_budget_ms: float | None = None
    local_photos: int = 0
    local_top1: float | None = None
    required_local_top1: float | None = None
    passed: bool = False
    reason: str = ""


class ReportedState(msgspec.Struct, frozen=True, kw_only=True):
    """What a kiosk runs, published retained by its agent after every change.

    Attributes:
        kiosk_id: The kiosk.
        status: See :class:`KioskStatus`.
        current: The version running now.
        group: The kiosk's group (a rollout's ``--group``: a store, a region).
        previous: The version before it ("" if none).
        desired: The version the last desired state asked for.
        model_sha256: The running model file's sha256.
        acceptance: The figures of the last acceptance check (None before the first).
        reason: Why the last desired state was refused or rolled back ("" otherwise).
        updated: Unix time of this report.
    """

    kiosk_id: str
    status: KioskStatus
    current: str
    group: str = ""
    previous: str = ""
    desired: str = ""
    model_sha256: str = ""
    acceptance: AcceptanceFigures | None = None
    reason: str = ""
    updated: float = 0.0


class DriftAlert(msgspec.Struct, frozen=True, kw_only=True):
    """The empty tray moved away from the kiosk's baseline (see :mod:`tillsight.fleet.drift`).

    Attributes:
        statistic: ``brightness_change`` or ``sharpness_change``: the window's median relative to the baseline's, minus 1.
        value: Its value over the window (-0.4: 40% darker).
        threshold: The absolute value it reached.
        window: Empty-tray stretches (one between two items) in the window.
    """

    statistic: str
    value: float
    threshold: float
    window: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """A kiosk's periodic health report.

    Attributes:
        kiosk_id, version: The kiosk and the bundle it runs.
        fps: Frames processed per second since the last report.
        p50_ms, p95_ms: Inference latency percentiles.
        frames_dropped: Frames replaced by newer ones (live sources), per lane summed.
        sink_drops: Events dropped per sink (sinks that may drop), by sink name.
        outbox_depth: Events waiting in the MQTT outbox.
        failures: Frames that failed (inference and frame errors) since the bundle was swapped in.
        items: Tray occupations seen in the drift window.
        unknown_rate: Share of those reported as unknown products.
        score_histogram: Counts of the top-1 scores of those items in ten bins of 0.1.
        drift: The drift alerts raised over the window (empty: none).
        updated: Unix time of this report.
    """

    kiosk_id: str
    version: str
    fps: float
    p50_ms: float
    p95_ms: float
    frames_dropped: int
    sink_drops: dict[str, int]
    outbox_depth: int
    failures: int
    items: int
    unknown_rate: float
    score_histogram: list[int]
    drift: list[DriftAlert]
    updated: float


_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """The message as JSON bytes."""
    return _encoder.encode(message)


def decode(payload: bytes, kind: type[Any], where: str) -> Any:
    """Decode and validate one message of type ``kind``.

    Raises:
        FleetError: The payload is not valid JSON of that type (the message names the field).
    """
    try:
        return msgspec.json.decode(payload, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise FleetError(
            f"{where}: not a valid {kind.__name__} ({exc}); the publisher must send what tillsight fleet sends"
        ) from exc
