"""Signed bundles: with trusted keys configured, only bundles the retailer signed load."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("cryptography", reason='signed bundles need cryptography: pip install "tillsight[signing]"')

import tillsight
from tillsight import cli
from tillsight.bundle import sha256_of_file
from tillsight.demo import ASSETS
from tillsight.errors import OptionsError, SignatureError
from tillsight.signing import SIGNATURE_NAME, TRUSTED_KEYS_VARIABLE, generate_keys, load_trusted_keys, sign_bundle


@pytest.fixture
def keys(tmp_path):
    generate_keys(tmp_path / "retailer.pem", tmp_path / "retailer.pub.pem")
    generate_keys(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    return tmp_path


@pytest.fixture
def bundle(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(ASSETS / "classifier", copy)
    return copy


@pytest.fixture
def no_model_opened(monkeypatch):
    """Fails the test if a backend is opened: a refusal must come before the interpreter sees the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was opened")

    monkeypatch.setattr("tillsight.classifier.open_backend", refuse)


def test_a_signed_bundle_loads_with_its_key_and_classifies_as_before(bundle, keys):
    with tillsight.load(bundle) as unchecked:
        image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        expected = unchecked.classify(image, 3)
    identifier = sign_bundle(bundle, keys / "retailer.pem")
    record = json.loads((bundle / SIGNATURE_NAME).read_text())
    assert record["key_id"] == identifier and record["algorithm"] == "Ed25519"
    with tillsight.load(bundle, trusted_keys=[keys / "other.pub.pem", keys / "retailer.pub.pem"]) as checked:
        assert checked.classify(image, 3) == expected


def test_an_unsigned_bundle_is_refused_in_one_line_once_keys_are_configured(bundle, keys, no_model_opened):
    with pytest.raises(SignatureError) as caught:
        tillsight.load(bundle, trusted_keys=[keys / "retailer.pub.pem"])
    assert (
        str(caught.value)
        == f"bundle {bundle} is not signed and trusted keys are configured; sign it with 'tillsight sign {bundle} --key KEY'"
    )


def test_a_bundle_signed_by_another_key_is_refused(bundle, keys, no_model_opened):
    sign_bundle(bundle, keys / "other.pem")
    with pytest.raises(
        SignatureError,
        match=r"is signed by key [0-9a-f]{16}, which is not trusted here \(trusted: [0-9a-f]{16} \(.*retailer.pub.pem\)\)",
    ):
        tillsight.load(bundle, trusted_keys=[keys / "retailer.pub.pem"])


def test_a_tampered_bundle_with_recomputed_sums_is_refused(bundle, keys, no_model_opened):
    sign_bundle(bundle, keys / "retailer.pem")
    model = bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a changed weight
    model.write_bytes(bytes(data))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"]["model.tflite"] = {"bytes": len(data), "sha256": sha256_of_file(model)}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tillsight.read_bundle(bundle)  # the sums alone no longer notice...
    with pytest.raises(
        SignatureError,
        match=r"its signature does not match its manifest \(the manifest or signature.json was changed after key [0-9a-f]{16} signed it\); refusing it",
    ):
        tillsight.load(bundle, trusted_keys=[keys / "retailer.pub.pem"])  # ...the signature does


def test_trusted_keys_come_from_the_environment_separated_by_the_path_separator(bundle, keys, monkeypatch, no_model_opened):
    monkeypatch.setenv(TRUSTED_KEYS_VARIABLE, os.pathsep.join([str(keys / "other.pub.pem"), str(keys / "retailer.pub.pem")]))
    sign_bundle(bundle, keys / "retailer.pem")
    with pytest.raises(AssertionError, match="the model was opened"):  # accepted: it got as far as opening the model
        tillsight.load(bundle)
    (bundle / SIGNATURE_NAME).unlink()
    with pytest.raises(SignatureError, match="is not signed"):
        tillsight.load(bundle)


def test_without_keys_bundles_load_with_one_warning_a_process_and_none_for_the_demo(bundle, caplog, monkeypatch):
    import tillsight.classifier
    from tillsight.demo import ASSETS

    monkeypatch.delenv(TRUSTED_KEYS_VARIABLE, raising=False)
    monkeypatch.setattr(tillsight.classifier, "_warned_unchecked", False)
    with caplog.at_level(logging.WARNING, logger="tillsight.classifier"):
        tillsight.load(ASSETS / "classifier").close()  # the package's own bundle
        assert not caplog.records
        for _ in range(2):
            tillsight.load(bundle).close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "tillsight.classifier"]
    assert len(warnings) == 1 and "origin is not checked" in warnings[0] and TRUSTED_KEYS_VARIABLE in warnings[0]
    assert str(bundle) in warnings[0]


def test_keys_are_standard_pem_files_that_openssl_reads_and_writes(keys, bundle, tmp_path):
    assert (keys / "retailer.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert (keys / "retailer.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    assert oct((keys / "retailer.pem").stat().st_mode & 0o777) == "0o600"
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(tmp_path / "ops.pem")], check=True)
    subprocess.run(
        [openssl, "pkey", "-in", str(tmp_path / "ops.pem"), "-pubout", "-out", str(tmp_path / "ops.pub.pem")], check=True
    )
    sign_bundle(bundle, tmp_path / "ops.pem")
    with tillsight.load(bundle, trusted_keys=[tmp_path / "ops.pub.pem"]):
        pass


def test_keys_that_are_not_ed25519_or_not_keys_are_one_line_errors(tmp_path, keys):
    (tmp_path / "notes.pem").write_text("hello\n")
    with pytest.raises(OptionsError, match="is not a PEM public key"):
        load_trusted_keys([tmp_path / "notes.pem"])
    with pytest.raises(OptionsError, match="cannot read the trusted key"):
        load_trusted_keys([tmp_path / "missing.pub.pem"])
    with pytest.raises(OptionsError, match="never overwrites a key"):
        generate_keys(keys / "retailer.pem", tmp_path / "x.pub.pem")


def test_cli_keygen_sign_and_run_with_a_trusted_key(tmp_path, bundle, capsys):
    assert cli.main(["keygen", str(tmp_path / "store")]) == 0
    assert "private" in capsys.readouterr().out
    run = [
        "run",
        str(bundle),
        "--source",
        str(ASSETS / "checkout.mp4"),
        "--max-frames",
        "5",
        "--trusted-key",
        str(tmp_path / "store.pub.pem"),
    ]
    assert cli.main(run) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: bundle {bundle} is not signed and trusted keys are configured; sign it with 'tillsight sign {bundle} --key KEY'"
    ]
    assert cli.main(["sign", str(bundle), "--key", str(tmp_path / "store.pem")]) == 0
    assert "signed" in capsys.readouterr().out
    assert cli.main(run) == 0


@pytest.mark.integration
def test_convert_with_a_sign_key_signs_the_bundle_it_writes(bundle_dir, retailer_key):
    with tillsight.load(bundle_dir, trusted_keys=[retailer_key[1]]) as classifier:
        assert classifier.labels


def test_inspect_says_what_loading_would_decide(bundle, keys, capsys, monkeypatch):
    """inspect printed '(verified)' and exited 0 for bundles that classify, run, val and benchmark refuse."""
    monkeypatch.delenv(TRUSTED_KEYS_VARIABLE, raising=False)
    trusted = ["--trusted-key", str(keys / "retailer.pub.pem")]

    def inspect(*extra: str) -> tuple[int, str]:
        code = cli.main(["inspect", str(bundle), *extra])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = inspect(*trusted)
    assert code == 1 and "signature: unsigned (trusted keys are configured: loading refuses it)" in out
    assert inspect()[0] == 0  # no keys: loading would not refuse it either
    sign_bundle(bundle, keys / "other.pem")
    code, out = inspect(*trusted)
    assert code == 1 and "which is not trusted here" in out
    identifier = sign_bundle(bundle, keys / "retailer.pem")
    code, out = inspect(*trusted)
    assert code == 0 and f"signature: signed by key {identifier}, verified" in out
    monkeypatch.setenv(TRUSTED_KEYS_VARIABLE, str(keys / "retailer.pub.pem"))  # the environment's keys count too
    assert inspect()[0] == 0
    record = json.loads((bundle / SIGNATURE_NAME).read_text())
    record["signature"] = record["signature"][:-8] + ("A" * 8 if not record["signature"].endswith("A" * 8) else "B" * 8)
    (bundle / SIGNATURE_NAME).write_text(json.dumps(record))
    code, out = inspect()
    assert code == 1 and "its signature does not match its manifest" in out
    with pytest.raises(SignatureError, match="signature does not match its manifest"):  # and loading agrees
        tillsight.load(bundle)
