"""The shipped JSON Schemas: generated from the types that decode each document, current, and in
agreement with the readers on real documents."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
import tomllib

from tillsight import cli
from tillsight.bundle import Manifest, read_bundle
from tillsight.demo import ASSETS
from tillsight.errors import BundleError
from tillsight.json_schemas import SCHEMA_FOLDER, json_schemas
from tillsight.profiles import PROFILE_PACKAGE, list_profiles


def _schema(name: str) -> dict:
    return json.loads((SCHEMA_FOLDER / name).read_text())


def test_the_shipped_schemas_are_the_ones_the_types_generate():
    generated = json_schemas()
    for name, schema in generated.items():
        assert _schema(name) == schema, f"{name} is stale: run python -m tillsight.json_schemas"
    assert sorted(p.name for p in SCHEMA_FOLDER.glob("*.json")) == sorted(generated)


def test_a_written_manifest_and_every_shipped_profile_validate_and_a_refused_manifest_does_not():
    manifest = read_bundle(ASSETS / "classifier").manifest.to_dict()  # the shipped bundle, in today's form
    jsonschema.validate(manifest, _schema("manifest.schema.json"))
    assert Manifest.from_dict(manifest, "m.json") == read_bundle(ASSETS / "classifier").manifest
    for broken in (dict(manifest, labels="a b"), {**manifest, "runtime": {**manifest["runtime"], "backend": "tpu9000"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, _schema("manifest.schema.json"))
        with pytest.raises(BundleError, match="malformed"):
            Manifest.from_dict(broken, "m.json")
    profiles = resources.files(PROFILE_PACKAGE)
    for profile in list_profiles():
        table = tomllib.loads((profiles / f"{profile.name}.toml").read_text(encoding="utf-8"))
        jsonschema.validate(table, _schema("profile.schema.json"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**table, "threads": "four"}, _schema("profile.schema.json"))


def test_a_benchmark_document_validates(tmp_path):
    out = tmp_path / "b.json"
    assert cli.main(["benchmark", str(ASSETS / "classifier"), "--frames", "3", "--json", str(out)]) == 0
    jsonschema.validate(json.loads(out.read_text()), _schema("benchmark.schema.json"))
