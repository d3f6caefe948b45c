"""A kiosk's bundle store: what survives a restart, how many bundles it keeps, and a crash loop's rollback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tillsight.demo import ASSETS
from tillsight.errors import FleetError, OptionsError
from tillsight.fleet import BundleStore, pack_bundle


def _install(store: BundleStore, version: str, tmp_path: Path) -> None:
    packed = tmp_path / f"{version}.tar"
    pack_bundle(ASSETS / "classifier", packed)
    store.install(version, packed)
    time.sleep(0.01)  # distinct folder times: the oldest go first


def test_the_store_keeps_the_running_bundle_the_previous_one_and_the_newest_others(tmp_path: Path):
    store = BundleStore(tmp_path / "store", keep=3)
    for version in ("v1", "v2", "v3", "v4"):
        _install(store, version, tmp_path)
        store.swapped(version)
    assert store.state.current == "v4" and store.state.previous == "v3"
    assert sorted(p.name for p in (tmp_path / "store" / "bundles").iterdir()) == ["v2", "v3", "v4"]
    again = BundleStore(tmp_path / "store")  # what a restarted kiosk reads
    assert again.state.current == "v4" and again.state.previous == "v3" and again.has("v4")


def test_a_kiosk_that_keeps_restarting_after_a_swap_goes_back_to_the_previous_bundle(tmp_path: Path):
    store = BundleStore(tmp_path / "store")
    for version in ("v1", "v2"):
        _install(store, version, tmp_path)
        store.swapped(version)
    assert store.starting(crash_starts=3, crash_window_s=600) is None
    assert BundleStore(tmp_path / "store").starting(3, 600) is None
    assert BundleStore(tmp_path / "store").starting(3, 600) == "v2"  # the third start within 10 minutes
    state = BundleStore(tmp_path / "store").state
    assert state.current == "v1" and "started 3 times" in state.refused["v2"]


def test_a_start_long_after_the_swap_is_not_a_crash_loop(tmp_path: Path):
    store = BundleStore(tmp_path / "store")
    for version in ("v1", "v2"):
        _install(store, version, tmp_path)
        store.swapped(version)
    assert all(store.starting(crash_starts=2, crash_window_s=0.001) is None for _ in range(3)) and store.state.current == "v2"


def test_bad_versions_and_records_are_refused_with_their_fix(tmp_path: Path):
    with pytest.raises(OptionsError, match="at least 2 bundles"):
        BundleStore(tmp_path / "s", keep=1)
    store = BundleStore(tmp_path / "s")
    with pytest.raises(FleetError, match="must be 1-64 letters"):
        store.bundle_path("../etc")
    (tmp_path / "s" / "state.json").write_text("{not json")
    with pytest.raises(FleetError, match="remove it to start over"):
        BundleStore(tmp_path / "s")
