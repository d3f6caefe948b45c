"""The JSON Schemas tillsight ships in ``tillsight/schemas/``, generated from the types that decode each file.

One schema per document that crosses a boundary: the bundle's ``manifest.json``, a device profile's
TOML (the same tables), ``tillsight benchmark --json``, ``tune.json`` and the fleet's three MQTT
messages. Every reader decodes them with msgspec into those same frozen types, so a schema cannot
say something the code does not check. A test keeps the shipped files equal to what the types
generate; after changing a type, regenerate them with ``python -m tillsight.json_schemas``.

Why msgspec: it decodes and validates JSON into dataclasses and its own Structs in one step, with
the failing field's path in a one-line error; it generates the schemas from the same types; it is
one small compiled wheel with builds for aarch64, and it is fast enough for a kiosk's MQTT traffic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from . import bundle
from .benchmarking import FORMAT_NAME as BENCHMARK_FORMAT
from .benchmarking import FORMAT_VERSION as BENCHMARK_VERSION
from .benchmarking import BenchmarkReport
from .fleet.messages import DesiredState, Health, ReportedState
from .profiles import Profile

__all__ = ["SCHEMA_FOLDER", "json_schemas", "write_schemas"]

#: Where the schemas ship, inside the package.
SCHEMA_FOLDER = Path(__file__).parent / "schemas"


def json_schemas() -> dict[str, dict[str, Any]]:
    """Every shipped schema, by file name."""
    from .converters.tune_space import TuneRecord  # data types only: no TensorFlow

    schemas = {
        "manifest.schema.json": _with_format(msgspec.json.schema(bundle.Manifest), bundle.FORMAT_NAME, bundle.FORMAT_VERSION),
        "profile.schema.json": _profile_schema(),
        "benchmark.schema.json": _with_format(msgspec.json.schema(BenchmarkReport), BENCHMARK_FORMAT, BENCHMARK_VERSION),
        "tune.schema.json": msgspec.json.schema(TuneRecord),
        "fleet-desired.schema.json": msgspec.json.schema(DesiredState),
        "fleet-reported.schema.json": msgspec.json.schema(ReportedState),
        "fleet-health.schema.json": msgspec.json.schema(Health),
    }
    return {name: json.loads(json.dumps(schema)) for name, schema in schemas.items()}  # defaults as JSON has them


def _with_format(schema: dict[str, Any], name: str, version: int) -> dict[str, Any]:
    """The document's schema with the two keys every tillsight document starts with."""
    root = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    root["properties"] = {
        "format": {"const": name},
        "format_version": {"type": "integer", "maximum": version},
        **root["properties"],
    }
    root["required"] = ["format", "format_version", *root.get("required", [])]
    return schema


def _profile_schema() -> dict[str, Any]:
    """A profile file's tables: the profile's fields but the two taken from the file name."""
    schema = msgspec.json.schema(Profile)
    root = schema["$defs"]["Profile"]
    for derived in ("name", "file"):
        root["properties"].pop(derived)
        if derived in root.get("required", []):
            root["required"].remove(derived)
    return schema


def write_schemas(folder: Path = SCHEMA_FOLDER) -> list[Path]:
    """Write every schema into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas():
        print(path)
