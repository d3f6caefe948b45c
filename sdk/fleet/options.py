"""How a kiosk takes part in a fleet: its broker, id, store, trusted keys, acceptance and rollback settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import OptionsError
from ..signing import TrustedKey
from .acceptance import AcceptanceOptions
from .store import BundleStore

__all__ = ["FleetOptions"]


@dataclasses.dataclass(frozen=True)
class FleetOptions:
    """How a kiosk takes part in a fleet.

    Attributes:
        broker: The broker and topic prefix (an ``MqttOptions`` whose ``topic`` is the fleet prefix).
        kiosk_id: This kiosk's id in the fleet (letters, digits, ``.``, ``_``, ``-``).
        group: Its group, for rollouts by ``--group`` (a store, a region; "" for none).
        store: The folder of the kiosk's bundles and their record (see :class:`BundleStore`).
        trusted_keys: The keys bundles must be signed with: at least one (a fleet never runs unsigned bundles).
        acceptance: What a bundle must pass on this kiosk before it is swapped in.
        keep: Bundles kept on disk (at least 2).
        crash_failures: Failed frames (or process starts) after a swap that roll back to the previous bundle...
        crash_window_s: ...when they happen within this many seconds of the swap.
        health_interval_s: Seconds between health reports.
        max_bundle_bytes: The largest bundle a desired state may announce.
        retry_s: Seconds between download attempts of an unreachable bundle.
    """

    broker: Any
    kiosk_id: str
    store: Path
    trusted_keys: tuple[str | Path | TrustedKey, ...]
    group: str = ""
    acceptance: AcceptanceOptions = AcceptanceOptions()
    keep: int = 3
    crash_failures: int = 5
    crash_window_s: float = 600.0
    health_interval_s: float = 300.0
    max_bundle_bytes: int = 512 * 1024 * 1024
    retry_s: float = 5.0

    def __post_init__(self) -> None:
        BundleStore.check_version(self.kiosk_id)  # the same rule: it becomes a topic level
        if not self.trusted_keys:
            raise OptionsError("a fleet kiosk needs --trusted-key: it refuses bundles that are not signed by the retailer")
        if self.crash_failures < 1 or self.crash_window_s <= 0 or self.health_interval_s <= 0:
            raise OptionsError("crash_failures, crash_window_s and health_interval_s must be positive")

    @property
    def prefix(self) -> str:
        return str(self.broker.topic).rstrip("/")
