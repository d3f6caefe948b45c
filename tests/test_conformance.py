"""The conformance set a bundle carries: written by the converter, reproduced by the runtime, failed by another model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tillsight
from tillsight.conformance import CONFORMANCE_FILE, MIN_MARGIN, check_conformance
from tillsight.demo import ASSETS
from tillsight.errors import BundleError


def test_the_demo_bundle_reproduces_its_conformance_set_exactly():
    with tillsight.load(ASSETS / "classifier") as classifier:
        result = check_conformance(classifier)
    assert result.inputs == 24 and result.agreement == 100.0 and result.max_score_difference == 0.0


@pytest.mark.integration
def test_a_converted_bundle_carries_a_signed_conformance_set_of_clear_evaluation_photos(bundle_dir: Path, retailer_key):
    from tillsight.signing import load_trusted_keys

    bundle = tillsight.read_bundle(bundle_dir, trusted_keys=load_trusted_keys([retailer_key[1]]))  # the signature covers it
    assert CONFORMANCE_FILE in bundle.manifest.artifacts
    assert bundle.manifest.metrics.model_bytes == (bundle_dir / bundle.manifest.runtime.model_file).stat().st_size
    with np.load(bundle_dir / CONFORMANCE_FILE) as data:
        top1, scores = data["top1"], data["scores"]
    ordered = np.sort(scores, axis=1)
    assert len(top1) >= 10 and np.all(ordered[:, -1] - ordered[:, -2] >= MIN_MARGIN)
    assert np.array_equal(top1, np.argmax(scores, axis=1))
    with tillsight.load(bundle_dir) as classifier:
        result = check_conformance(classifier)
    assert result.agreement == 100.0 and result.inputs == len(top1)


def test_a_runtime_that_answers_otherwise_fails_the_conformance_set(tmp_path: Path):
    """The set's recorded top-1 results shifted by one class stand for a host whose runtime computed otherwise."""
    from tests.fleet.helpers import demo_bundle_copy

    shifted = demo_bundle_copy(tmp_path / "shifted", None, wrong_conformance=True)
    with tillsight.load(shifted) as classifier:
        assert check_conformance(classifier).agreement == 0.0


def test_a_bundle_without_a_conformance_set_is_named_with_the_fix(tmp_path: Path):
    bare = tmp_path / "bare"
    shutil.copytree(ASSETS / "classifier", bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    del manifest["artifacts"][CONFORMANCE_FILE]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    (bare / CONFORMANCE_FILE).unlink()
    with tillsight.load(bare) as classifier, pytest.raises(BundleError, match="carries no conformance set.*convert it again"):
        check_conformance(classifier)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32])
def test_inputs_are_stored_losslessly_in_every_input_type(dtype):
    from tillsight.conformance import _packed, _unpacked

    rng = np.random.default_rng(0)
    inputs = rng.integers(-128 if dtype == np.int8 else 0, 128 if dtype == np.int8 else 256, (3, 17, 23, 3)).astype(dtype)
    restored = _unpacked(_packed(inputs))
    assert restored.dtype == inputs.dtype and np.array_equal(restored, inputs)
