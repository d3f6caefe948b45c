"""The fleet's messages: decoded into typed structures, refused with the field named, schemas shipped and current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tillsight
from tillsight.errors import FleetError
from tillsight.fleet import DesiredState, KioskStatus, ReportedState, json_schemas
from tillsight.fleet.messages import decode, encode

SCHEMAS = Path(tillsight.__file__).parent / "schemas"


def test_the_shipped_json_schemas_are_the_ones_the_types_generate():
    for name, schema in json_schemas().items():
        assert json.loads((SCHEMAS / name).read_text()) == schema, f"{name} is stale: regenerate it from the types"
    assert sorted(p.name for p in SCHEMAS.glob("fleet-*.json")) == sorted(json_schemas())


def test_a_message_round_trips_and_a_bad_one_names_its_field():
    reported = ReportedState(kiosk_id="k1", status=KioskStatus.REFUSED, current="v1", reason="acceptance: conformance")
    assert decode(encode(reported), ReportedState, "t") == reported
    with pytest.raises(FleetError, match=r"not a valid DesiredState .*\$\.bytes"):
        decode(
            b'{"version": "v2", "url": "http://x/v2.tar", "sha256": "ab", "bytes": "many"}',
            DesiredState,
            "fleet/kiosks/k1/desired",
        )
    with pytest.raises(FleetError, match="not a valid ReportedState"):
        decode(b"{not json", ReportedState, "fleet/kiosks/k1/reported")
    with pytest.raises(FleetError, match=r"\$\.status"):
        decode(b'{"kiosk_id": "k1", "status": "dancing", "current": "v1"}', ReportedState, "t")
