"""The on-device acceptance check on the demo bundle: conformance, budgets and the kiosk's own photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tillsight
from tillsight.demo import ASSETS
from tillsight.fleet import AcceptanceOptions, accept
from tillsight.validation import validate

from .helpers import demo_bundle_copy

LOCAL_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "grocery-store" / "val.txt"


def test_the_demo_bundle_passes_with_its_figures():
    with tillsight.load(ASSETS / "classifier") as candidate:
        figures = accept(candidate, AcceptanceOptions(benchmark_frames=10))
    assert figures.passed and figures.reason == ""
    assert figures.conformance_inputs == 24 and figures.conformance_agreement == 100.0 and figures.p50_ms > 0


def test_a_wrong_runtime_fails_conformance_before_anything_slower_runs(tmp_path: Path):
    bundle = demo_bundle_copy(tmp_path / "bad", None, wrong_conformance=True)
    with tillsight.load(bundle) as candidate:
        figures = accept(candidate, AcceptanceOptions(benchmark_frames=10))
    assert not figures.passed and figures.conformance_agreement == 0.0 and figures.p50_ms == 0.0  # no benchmark ran
    assert figures.reason.startswith("conformance: this kiosk reproduces the converting host's top-1 on 0.0% of 24 inputs")


def test_a_bundle_over_its_latency_budget_on_this_kiosk_fails(tmp_path: Path):
    bundle = tmp_path / "slow"
    shutil.copytree(ASSETS / "classifier", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["profile"]["budgets"]["max_latency_ms"] = 0.001
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with tillsight.load(bundle) as candidate:
        figures = accept(candidate, AcceptanceOptions(benchmark_frames=10))
    assert not figures.passed and figures.latency_budget_ms == 0.001 and figures.p50_ms > 0.001
    assert figures.reason.startswith("budgets: classify p50") and "max_latency_ms" in figures.reason


def test_the_kiosks_own_photos_must_keep_the_stated_top1():
    measured = validate(ASSETS / "classifier", LOCAL_PHOTOS).top1
    with tillsight.load(ASSETS / "classifier") as candidate:
        kept = accept(candidate, AcceptanceOptions(benchmark_frames=0, local_photos=LOCAL_PHOTOS, min_local_top1=measured))
        short = accept(candidate, AcceptanceOptions(benchmark_frames=0, local_photos=LOCAL_PHOTOS, min_local_top1=measured + 0.1))
    assert kept.passed and kept.local_top1 == measured and kept.local_photos == 51  # the val photos of tests/data
    assert not short.passed and short.reason.startswith(f"local photos: top-1 {measured:.1f}%")


def test_unusable_requirements_are_refused_with_their_fix(tmp_path: Path):
    from tillsight.errors import OptionsError

    with pytest.raises(OptionsError, match=r"must be in \(0, 100\]"):
        AcceptanceOptions(required_agreement=0)
    with pytest.raises(OptionsError, match="do not exist"):
        AcceptanceOptions(local_photos=tmp_path / "none")
