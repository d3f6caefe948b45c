"""JSON out of typed values: the one plain form (:func:`json_ready`) and the one atomic writer (:func:`write_json_file`).

Every JSON file tillsight writes (manifests, signatures, benchmark, validation and tune reports, a
kiosk's store record and drift baseline) goes through :func:`write_json_file`: a reader sees the old
file or the new one, never half of one. The types themselves (dataclasses, msgspec Structs) are
decoded with msgspec where they are read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from .staging import staged_file

__all__ = ["json_ready", "write_json_file"]


def json_ready(value: Any) -> Any:
    """``value`` (a dataclass, a msgspec Struct, or builtins holding them) as JSON's own types:
    dicts, lists, strings, numbers, booleans and None; enums become their values."""
    return msgspec.json.decode(msgspec.json.encode(value))


def write_json_file(path: str | Path, value: Any, durable: bool = False) -> Path:
    """Write ``value`` as indented JSON, atomically.

    Args:
        path: The file; it appears only when complete, and replaces the old one in one step.
        value: What :func:`json_ready` accepts.
        durable: Also flush the file and its folder to disk before returning, so that the new file
            survives a power cut (a kiosk's own records).

    Returns:
        ``path``.
    """
    path = Path(path)
    with staged_file(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n")
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    if durable:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself
        finally:
            os.close(folder)
    return path
