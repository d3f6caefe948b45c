"""A fleet of kiosks over the store's MQTT broker (``pip install "tillsight[fleet]"``).

* :mod:`.messages`: the desired, reported and health states (msgspec Structs) and their topics.
* :mod:`.transfer`: a bundle packed into one file, downloaded (resumable, sha256-checked) and unpacked.
* :mod:`.store`: a kiosk's bundles on disk and the record that survives a power cut.
* :mod:`.acceptance`: what a kiosk proves about a bundle before it swaps it in.
* :mod:`.drift`: drift alerts from the kiosk's empty tray against its own baseline.
* :mod:`.options`: how a kiosk takes part (broker, id, store, trusted keys, acceptance, rollback).
* :mod:`.agent`: the kiosk side: follow the desired state, accept, swap, report, roll back.
* :mod:`.rollout`: the backend side: waves, promotion, abort and rollback; the fleet's status.
"""

from __future__ import annotations

from .acceptance import AcceptanceOptions, accept
from .agent import FleetAgent
from .drift import DriftMonitor
from .messages import AcceptanceFigures, DesiredState, DriftAlert, Health, KioskStatus, ReportedState
from .options import FleetOptions
from .rollout import KioskOutcome, RolloutOptions, RolloutResult, desired_state, fleet_status, parse_abort_if, rollout
from .store import BundleStore
from .transfer import download, pack_bundle, unpack_bundle

__all__ = [
    "AcceptanceFigures",
    "AcceptanceOptions",
    "BundleStore",
    "DesiredState",
    "DriftAlert",
    "DriftMonitor",
    "FleetAgent",
    "FleetOptions",
    "Health",
    "KioskOutcome",
    "KioskStatus",
    "ReportedState",
    "RolloutOptions",
    "RolloutResult",
    "accept",
    "desired_state",
    "download",
    "fleet_status",
    "pack_bundle",
    "parse_abort_if",
    "rollout",
    "unpack_bundle",
]
