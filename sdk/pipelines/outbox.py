"""The MQTT sink's durable outbox: events not yet acknowledged by the broker, in an SQLite file.

:class:`~tillsight.pipelines.mqtt.MqttSink` puts each event here before it returns and removes it
once the broker acknowledged it; one process at a time may use a file (a lock beside it says which).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ..errors import SinkError

__all__ = ["Outbox", "default_outbox_path"]


def default_outbox_path() -> Path:
    """Where the outbox lives unless told: ``$XDG_STATE_HOME/tillsight/mqtt-outbox.sqlite``."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "tillsight" / "mqtt-outbox.sqlite"


class Outbox:
    """Events not yet acknowledged by the broker, in an SQLite file (WAL, synced on commit).

    Safe to use from several threads; ordered by arrival; an event id is stored once.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._holder = _lock_for_this_process(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before put() returns
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "event_id TEXT UNIQUE NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise SinkError(f"cannot open the MQTT outbox {self.path}: {exc}; pass a writable file with --mqtt-outbox") from exc
        self._lock = threading.Lock()

    def put(self, event_id: str, topic: str, payload: bytes) -> None:
        """Store one event durably (a second event with the same id is ignored)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (event_id, topic, payload) VALUES (?, ?, ?)", (event_id, topic, payload)
            )

    def oldest(self, limit: int) -> list[tuple[int, str, str, bytes]]:
        """Up to ``limit`` events, oldest first, as ``(seq, event_id, topic, payload)``."""
        with self._lock:
            return self._db.execute("SELECT seq, event_id, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def remove(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._holder is not None:
                self._holder.close()  # releases the lock (the OS releases it too if the process dies)
                self._holder = None


def _lock_for_this_process(path: Path) -> Any:
    """Hold ``path.lock`` exclusively while this process uses the outbox; refuse a second user in one line.

    Two kiosk processes on one outbox each counted the other's events as their own. On systems
    without ``fcntl`` the outbox is not locked.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    holder = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder.seek(0)
        other = holder.read().strip() or "another process"
        holder.close()
        raise SinkError(f"the MQTT outbox {path} is in use by {other}; give each kiosk process its own --mqtt-outbox") from None
    holder.seek(0)
    holder.truncate()
    holder.write(f"process {os.getpid()}")
    holder.flush()
    return holder
