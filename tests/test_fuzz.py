"""Fuzzing the parsers of untrusted files: manifests and .tflite flatbuffers.

Whatever the bytes, they raise tillsight's own error (or parse), never anything else.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillsight.bundle import Manifest, read_bundle
from tillsight.demo import ASSETS
from tillsight.errors import BundleError

FUZZ = settings(
    max_examples=int(os.environ.get("TILLSIGHT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
VALID_MANIFEST = json.loads((ASSETS / "classifier" / "manifest.json").read_text())
VALID_TFLITE = (ASSETS / "classifier" / "model.tflite").read_bytes()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def _set_path(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


MANIFEST_PATHS = list(_paths(VALID_MANIFEST))


@FUZZ
@given(json_values)
def test_random_json_is_refused_as_a_bundle_error(data):
    with pytest.raises(BundleError):
        Manifest.from_dict(data, "fuzz.json")


@FUZZ
@given(st.sampled_from(MANIFEST_PATHS), json_values)
def test_a_valid_manifest_with_one_field_replaced_parses_or_raises_bundle_error(path, value):
    data = json.loads(json.dumps(VALID_MANIFEST))
    _set_path(data, path, value)
    try:
        Manifest.from_dict(data, "fuzz.json")
    except BundleError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_are_not_a_tflite_model(tmp_path_factory, data):
    from tillsight.converters.edgetpu_preflight import preflight

    path = tmp_path_factory.mktemp("fuzz") / "model.tflite"
    path.write_bytes(data)
    with pytest.raises(BundleError):
        preflight(path)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID_TFLITE) - 1), st.integers(1, 255)), min_size=1, max_size=8),
    st.integers(64, len(VALID_TFLITE)),
)
def test_mutated_tflite_models_give_a_report_or_a_bundle_error(tmp_path_factory, flips, length):
    from tillsight.converters.edgetpu_preflight import preflight

    data = bytearray(VALID_TFLITE)
    for offset, mask in flips:
        data[offset] ^= mask
    path = tmp_path_factory.mktemp("fuzz") / "model.tflite"
    path.write_bytes(bytes(data[:length]))
    try:
        report = preflight(path)
    except BundleError:
        return
    assert report.summary()  # a model that still parses gives a usable report


@FUZZ
@given(st.binary(min_size=0, max_size=512), st.booleans())
def test_a_bundle_with_a_mangled_manifest_file_raises_bundle_error(tmp_path_factory, noise, keep_prefix):
    bundle = shutil.copytree(ASSETS / "classifier", tmp_path_factory.mktemp("fuzz") / "bundle")
    text = (bundle / "manifest.json").read_bytes()
    (bundle / "manifest.json").write_bytes((text[: len(text) // 2] if keep_prefix else b"") + noise)
    with pytest.raises(BundleError):
        read_bundle(bundle)


def test_no_pickle_anywhere_in_the_package_but_the_restricted_weights_reader():
    """Models and bundles are data, never code: no pickle, no allow_pickle.

    The one exception reads published ImageNet weights (legacy torch checkpoints) through an
    allowlist of four globals; tests/converters/test_backbones.py shows it refuses any other.
    """
    from .conftest import REPO

    offenders = [
        str(path.relative_to(REPO))
        for folder in ("sdk", "converters", "runtimes")
        for path in (REPO / folder).rglob("*.py")
        if any(word in path.read_text() for word in ("import pickle", "allow_pickle=True", "cloudpickle", "import dill"))
    ]
    assert offenders == ["converters/torch_checkpoint.py"]
