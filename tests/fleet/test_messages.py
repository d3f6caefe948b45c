"""The fleet's messages: decoded into typed structures, refused with the field named (their schemas: test_json_schemas)."""

from __future__ import annotations

import pytest

from tillsight.errors import FleetError
from tillsight.fleet import DesiredState, KioskStatus, ReportedState
from tillsight.fleet.messages import decode, encode


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
