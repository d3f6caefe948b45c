"""A kiosk's bundles on disk: the one it runs, the ones before it, and a record that survives a power cut.

::

    STORE/
      state.json            which version runs, which ran before, which were refused; replaced atomically
      bundles/VERSION/      unpacked, verified bundles (the last ``keep`` of them)
      downloads/SHA256.tar  packed bundles being fetched (``.part`` while arriving)

``state.json`` names a version only once its folder is complete and the swap to it is done,
so a kiosk that loses power at any moment (mid-download, mid-unpack, mid-swap) starts again
on a bundle that worked. After a swap it also records each start: a kiosk that starts
``crash_starts`` times within ``crash_window_s`` of a swap starts on the previous bundle.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

import msgspec

from ..errors import FleetError, OptionsError
from ..jsonfile import write_json_file
from ..staging import staged_directory
from .transfer import unpack_bundle

__all__ = ["BundleStore", "StoreState"]

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class StoreState(msgspec.Struct, frozen=True, kw_only=True):
    """The contents of ``state.json``.

    Attributes:
        current: The version to run ("" before the first swap: the kiosk's own bundle).
        previous: The version it replaced ("" if none).
        refused: Versions this kiosk refused or rolled back, with why (never tried again).
        swapped_at: Unix time of the last swap (0: never).
        starts_since_swap: Unix times the kiosk started since that swap.
    """

    current: str = ""
    previous: str = ""
    refused: dict[str, str] = {}
    swapped_at: float = 0.0
    starts_since_swap: list[float] = []


class BundleStore:
    """The bundles of one kiosk under one folder."""

    def __init__(self, folder: str | Path, keep: int = 3):
        """Args:
        folder: The store's folder (created).
        keep: How many bundles to keep (the current one, the previous one, and older ones).

        Raises:
            OptionsError: ``keep`` below 2 (a rollback needs the previous bundle).
            FleetError: ``state.json`` is unreadable.
        """
        if keep < 2:
            raise OptionsError(f"a kiosk must keep at least 2 bundles (the running one and the one before), got {keep}")
        self.folder = Path(folder)
        self.keep = keep
        (self.folder / "bundles").mkdir(parents=True, exist_ok=True)
        (self.folder / "downloads").mkdir(parents=True, exist_ok=True)
        self.state = self._read()

    @staticmethod
    def check_version(version: str) -> str:
        """A version usable as a folder name, or FleetError."""
        if not _VERSION.fullmatch(version):
            raise FleetError(f"bundle version {version!r} must be 1-64 letters, digits, '.', '_' or '-'")
        return version

    def bundle_path(self, version: str) -> Path:
        return self.folder / "bundles" / self.check_version(version)

    def download_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise FleetError(f"bundle sha256 {sha256!r} is not 64 hex digits")
        return self.folder / "downloads" / f"{sha256}.tar"

    def has(self, version: str) -> bool:
        return (self.bundle_path(version) / "manifest.json").is_file()

    def install(self, version: str, packed: Path) -> Path:
        """Unpack a downloaded bundle into its version's folder (atomically; an existing one is replaced)."""
        final = self.bundle_path(version)
        with staged_directory(final) as staging:
            shutil.rmtree(staging)
            unpack_bundle(packed, staging)
        return final

    # -- the record --------------------------------------------------------------------

    def _read(self) -> StoreState:
        path = self.folder / "state.json"
        if not path.is_file():
            return StoreState()
        try:
            return msgspec.json.decode(path.read_bytes(), type=StoreState)
        except (msgspec.DecodeError, msgspec.ValidationError, OSError) as exc:
            raise FleetError(f"{path} is unreadable ({exc}); remove it to start over on the kiosk's own bundle") from exc

    def _write(self, state: StoreState) -> None:
        write_json_file(self.folder / "state.json", state, durable=True)
        self.state = state

    def swapped(self, version: str) -> None:
        """Record that ``version`` now runs (after the swap), and drop bundles beyond ``keep``."""
        state = self.state
        previous = state.current if state.current != version else state.previous
        self._write(
            msgspec.structs.replace(state, current=version, previous=previous, swapped_at=time.time(), starts_since_swap=[])
        )
        self._prune()

    def refuse(self, version: str, reason: str) -> None:
        """Record that ``version`` was refused (or rolled back): the kiosk never tries it again."""
        self._write(msgspec.structs.replace(self.state, refused={**self.state.refused, version: reason}))

    def rolled_back(self, version: str, reason: str) -> None:
        """Record that the kiosk went back from ``version`` to the previous bundle."""
        state = self.state
        back = state.previous if state.current == version else state.current
        self._write(
            msgspec.structs.replace(
                state,
                current=back,
                previous="",
                refused={**state.refused, version: reason},
                swapped_at=time.time(),
                starts_since_swap=[],
            )
        )

    def starting(self, crash_starts: int, crash_window_s: float) -> str | None:
        """Record a kiosk start; after a crash loop on the current bundle, roll back to the previous one.

        Returns:
            The version rolled back from (its reason is in ``state.refused``), or None.
        """
        state, now = self.state, time.time()
        if not state.current or not state.swapped_at or now - state.swapped_at > crash_window_s:
            return None
        starts = [*state.starts_since_swap, now]
        if len(starts) >= crash_starts and state.previous and self.has(state.previous):
            version = state.current
            reason = f"the kiosk started {len(starts)} times within {crash_window_s / 60:.0f} min of taking it"
            logger.warning("bundle %s: %s; going back to %s", version, reason, state.previous)
            self.rolled_back(version, reason)
            return version
        self._write(msgspec.structs.replace(state, starts_since_swap=starts))
        return None

    def _prune(self) -> None:
        keep_versions = {self.state.current, self.state.previous}
        folders = sorted((self.folder / "bundles").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        kept = 0
        for folder in folders:
            if folder.name.startswith("."):
                continue
            if folder.name in keep_versions or kept < self.keep - len(keep_versions):
                kept += folder.name not in keep_versions
                continue
            shutil.rmtree(folder, ignore_errors=True)
        for download in (self.folder / "downloads").glob("*.tar"):
            download.unlink(missing_ok=True)  # installed: the packed copy is not needed any more
