"""Signed bundles: proof that a bundle comes from the retailer (Ed25519, ``pip install "tillsight[signing]"``).

A bundle's manifest records the sha256 of every model file; the signature covers the
manifest's exact bytes, so it covers the whole bundle. It lives beside the manifest in
``signature.json``::

    {"format": "tillsight-signature/1", "algorithm": "Ed25519", "key_id": "3f2a...",
     "signature": "<base64 of the signature of manifest.json's bytes>"}

Keys are standard PEM files, so existing key tooling works: a PKCS#8 private key (``openssl
genpkey -algorithm ed25519``; an encrypted one is opened with ``$TILLSIGHT_KEY_PASSWORD``)
and a SubjectPublicKeyInfo public key (``openssl pkey -pubout``).

Once trusted keys are configured (``tillsight.load(..., trusted_keys=...)``, the
``TILLSIGHT_TRUSTED_KEYS`` variable: PEM paths separated by ``os.pathsep``, or ``run
--trusted-key``), a bundle that is unsigned, signed by another key, or whose manifest changed
after signing is refused before its model is opened.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BackendUnavailableError, BundleError, OptionsError, SignatureError
from .jsonfile import write_json_file
from .staging import staged_file

__all__ = [
    "SIGNATURE_NAME",
    "TRUSTED_KEYS_VARIABLE",
    "SignatureStatus",
    "TrustedKey",
    "generate_keys",
    "key_id",
    "load_private_key",
    "load_trusted_keys",
    "sign_bundle",
    "signature_status",
    "trusted_keys_from_environment",
    "verify_signature",
]

SIGNATURE_NAME = "signature.json"
TRUSTED_KEYS_VARIABLE = "TILLSIGHT_TRUSTED_KEYS"
KEY_PASSWORD_VARIABLE = "TILLSIGHT_KEY_PASSWORD"
_FORMAT = "tillsight-signature/1"


def _crypto() -> Any:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise BackendUnavailableError('signed bundles need cryptography: pip install "tillsight[signing]"') from exc
    return serialization, ed25519, InvalidSignature


@dataclasses.dataclass(frozen=True)
class TrustedKey:
    """A public key bundles may be signed with.

    Attributes:
        key_id: First 16 hex digits of the sha256 of the key's SubjectPublicKeyInfo (DER).
        source: Where it was read from (for messages).
        key: The ``Ed25519PublicKey``.
    """

    key_id: str
    source: str
    key: Any = dataclasses.field(repr=False, compare=False)


def key_id(public_key: Any) -> str:
    """The short id of an Ed25519 public key, as written in signatures."""
    serialization, _, _ = _crypto()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def generate_keys(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair: PKCS#8 private key (mode 0600) and SubjectPublicKeyInfo public key.

    Returns:
        The key id.

    Raises:
        OptionsError: Either file exists already (a key is never overwritten).
    """
    serialization, ed25519, _ = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise OptionsError(f"{path} exists; tillsight never overwrites a key: choose another name or move it away")
    private_key = ed25519.Ed25519PrivateKey.generate()
    password = os.environ.get(KEY_PASSWORD_VARIABLE)
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    private_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with staged_file(private_path) as temporary:
        temporary.write_bytes(private_pem)
    os.chmod(private_path, 0o600)
    with staged_file(public_path) as temporary:
        temporary.write_bytes(public_pem)
    return key_id(private_key.public_key())


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from a PKCS#8 PEM file (encrypted ones with ``$TILLSIGHT_KEY_PASSWORD``).

    Raises:
        OptionsError: Missing or unreadable file, wrong password, or not an Ed25519 private key.
    """
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OptionsError(f"cannot read the signing key {path}: {exc.strerror}; make one with 'tillsight keygen'") from exc
    password = os.environ.get(KEY_PASSWORD_VARIABLE)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError as exc:
        raise OptionsError(f"the signing key {path} is encrypted; set {KEY_PASSWORD_VARIABLE} to its password") from exc
    except ValueError as exc:
        raise OptionsError(
            f"{path} is not a PEM private key (or {KEY_PASSWORD_VARIABLE} is wrong): pass a PKCS#8 PEM file from 'tillsight keygen'"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise OptionsError(
            f"{path} is a {type(key).__name__.removeprefix('_')}, not an Ed25519 key; make one with 'tillsight keygen'"
        )
    return key


def load_trusted_keys(paths: Sequence[str | Path]) -> tuple[TrustedKey, ...]:
    """Public keys from SubjectPublicKeyInfo PEM files.

    Raises:
        OptionsError: A file is missing, unreadable, or not an Ed25519 public key.
    """
    serialization, ed25519, _ = _crypto()
    keys = []
    for path in map(Path, paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OptionsError(
                f"cannot read the trusted key {path}: {exc.strerror}; pass the .pub.pem file 'tillsight keygen' wrote"
            ) from exc
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise OptionsError(
                f"{path} is not a PEM public key; pass a SubjectPublicKeyInfo PEM file (the .pub.pem of 'tillsight keygen')"
            ) from exc
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise OptionsError(f"the trusted key {path} is not an Ed25519 key; tillsight bundles are signed with Ed25519")
        keys.append(TrustedKey(key_id(key), str(path), key))
    return tuple(keys)


def trusted_keys_from_environment() -> tuple[str, ...]:
    """The key files named by ``TILLSIGHT_TRUSTED_KEYS`` (separated by ``os.pathsep``), empty when unset."""
    value = os.environ.get(TRUSTED_KEYS_VARIABLE, "")
    return tuple(part for part in value.split(os.pathsep) if part.strip())


def sign_bundle(bundle_dir: str | Path, private_key: str | Path | Any) -> str:
    """Sign a bundle's manifest: writes ``signature.json`` beside it, atomically.

    Args:
        bundle_dir: The bundle directory.
        private_key: A PEM file path, or a loaded ``Ed25519PrivateKey``.

    Returns:
        The key id.

    Raises:
        BundleError: No manifest in ``bundle_dir``.
        OptionsError: The key cannot be used.
    """
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir} is not a tillsight bundle (no manifest.json); sign the folder 'tillsight convert' wrote")
    key = load_private_key(private_key) if isinstance(private_key, (str, Path)) else private_key
    signature = key.sign(manifest_path.read_bytes())
    identifier = key_id(key.public_key())
    record = {"format": _FORMAT, "algorithm": "Ed25519", "key_id": identifier, "signature": base64.b64encode(signature).decode()}
    write_json_file(bundle_dir / SIGNATURE_NAME, record, durable=True)
    return identifier


def verify_signature(bundle_dir: str | Path, manifest_bytes: bytes, trusted: Sequence[TrustedKey]) -> str:
    """Check that ``manifest_bytes`` (the bundle's manifest as read) were signed by one of ``trusted``.

    Returns:
        The id of the key that signed it.

    Raises:
        SignatureError: Unsigned, signed by a key not trusted, or the manifest changed after signing.
    """
    _, _, invalid_signature = _crypto()
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / SIGNATURE_NAME
    if not path.is_file():
        raise SignatureError(
            f"bundle {bundle_dir} is not signed and trusted keys are configured; sign it with 'tillsight sign {bundle_dir} --key KEY'"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        identifier, signature = str(record["key_id"]), base64.b64decode(record["signature"], validate=True)
        if record.get("format") != _FORMAT or record.get("algorithm") != "Ed25519":
            raise ValueError("unknown format")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"bundle {bundle_dir}: {SIGNATURE_NAME} is malformed ({exc}); sign the bundle again") from exc
    matching = [key for key in trusted if key.key_id == identifier]
    if not matching:
        ids = ", ".join(f"{key.key_id} ({key.source})" for key in trusted)
        raise SignatureError(
            f"bundle {bundle_dir} is signed by key {identifier}, which is not trusted here (trusted: {ids}); refusing it"
        )
    try:
        matching[0].key.verify(signature, manifest_bytes)
    except invalid_signature:
        raise SignatureError(
            f"bundle {bundle_dir}: its signature does not match its manifest (the manifest or {SIGNATURE_NAME} was changed "
            f"after key {identifier} signed it); refusing it (re-sign only a bundle you rebuilt)"
        ) from None
    return identifier


@dataclasses.dataclass(frozen=True)
class SignatureStatus:
    """What a bundle's signature says, checked against the trusted keys without refusing anything."""

    state: str  # "verified", "unchecked" (signed, no trusted keys), "unsigned", "foreign" or "broken"
    key_id: str | None
    refused: bool  # loading with these trusted keys would refuse the bundle
    detail: str  # one line for people


def signature_status(bundle_dir: str | Path, trusted: Sequence[TrustedKey]) -> SignatureStatus:
    """The bundle's signature state under ``trusted`` (what :func:`verify_signature` would decide, as a value)."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / SIGNATURE_NAME
    if not path.is_file():
        refused = bool(trusted)
        return SignatureStatus(
            "unsigned", None, refused, "unsigned" + (" (trusted keys are configured: loading refuses it)" if refused else "")
        )
    try:
        identifier = str(json.loads(path.read_text(encoding="utf-8"))["key_id"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        identifier = None
    if not trusted:
        if identifier is None:
            return SignatureStatus("broken", None, False, f"{SIGNATURE_NAME} is malformed (not checked: no trusted keys)")
        return SignatureStatus(
            "unchecked", identifier, False, f"signed by key {identifier}, not checked (no trusted keys configured)"
        )
    try:
        verify_signature(bundle_dir, (bundle_dir / "manifest.json").read_bytes(), trusted)
    except SignatureError as exc:
        state = "foreign" if "not trusted here" in str(exc) else "broken"
        return SignatureStatus(state, identifier, True, str(exc))
    return SignatureStatus("verified", identifier, False, f"signed by key {identifier}, verified")
