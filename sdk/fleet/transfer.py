"""A bundle in transit: packed into one file on the backend, downloaded and unpacked on the kiosk.

* :func:`pack_bundle` writes a bundle folder as an uncompressed tar, byte for byte the same for the
  same bundle (sorted names, zero times and owners), so its sha256 names the bundle.
* :func:`download` fetches it over HTTP(S) into a ``.part`` file beside the destination, resumes a
  cut download with a ``Range`` request, stops at the announced size, and keeps the file only
  when its sha256 is the announced one.
* :func:`unpack_bundle` extracts regular files only, never outside the destination.
"""

from __future__ import annotations

import logging
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..bundle import MANIFEST_NAME, sha256_of_file
from ..errors import BundleError, DownloadError
from ..staging import staged_file

__all__ = ["download", "pack_bundle", "unpack_bundle"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16


def pack_bundle(bundle_dir: str | Path, out: str | Path) -> str:
    """Pack a bundle folder into one tar file for a rollout.

    Args:
        bundle_dir: The (signed) bundle folder.
        out: The file to write (atomically).

    Returns:
        The packed file's sha256.

    Raises:
        BundleError: ``bundle_dir`` holds no manifest.
    """
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / MANIFEST_NAME).is_file():
        raise BundleError(f"{bundle_dir} is not a bundle (no {MANIFEST_NAME}); pack the folder tillsight convert wrote")
    with staged_file(out) as staging:
        with tarfile.open(staging, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(p for p in bundle_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
                info = tarfile.TarInfo(path.name)
                info.size = path.stat().st_size
                info.mode = 0o644
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
        digest = sha256_of_file(staging)
    return digest


def unpack_bundle(packed: str | Path, out: str | Path) -> None:
    """Extract a packed bundle into the folder ``out`` (which must not exist yet).

    Raises:
        BundleError: Not a tar file, or it holds anything but plain files at its top level.
    """
    out = Path(out)
    try:
        with tarfile.open(packed, "r:") as tar:
            members = tar.getmembers()
            for member in members:
                if not member.isfile() or "/" in member.name or member.name in ("", ".", ".."):
                    raise BundleError(
                        f"{packed} holds {member.name!r}, not a plain file of a bundle; pack it with tillsight fleet pack"
                    )
            out.mkdir(parents=True)
            for member in members:
                source = tar.extractfile(member)
                assert source is not None  # a regular file, checked above
                with source, open(out / member.name, "wb") as target:
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
                    target.flush()
                    os.fsync(target.fileno())
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{packed} cannot be unpacked ({exc}); the download is damaged or not a packed bundle") from exc


def download(url: str, out: str | Path, sha256: str, size: int, timeout: float = 30.0) -> Path:
    """Fetch ``url`` into ``out``, resuming a cut download, keeping it only if it is the announced file.

    Args:
        url: http:// or https:// address of a packed bundle.
        out: The file to write; ``out.part`` holds what has arrived so far.
        sha256: The packed file's announced sha256.
        size: Its announced size in bytes: the most that is downloaded.
        timeout: Seconds without data after which a connection counts as cut.

    Returns:
        ``out``.

    Raises:
        DownloadError: Unreachable, the server refuses, more than ``size`` bytes, or another sha256
            (the partial file is removed then, so the next try starts clean).
    """
    out = Path(out)
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"bundle URL {url!r} is not http:// or https://")
    part = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have < size:
        _fetch(url, part, have, size, timeout)
    digest = sha256_of_file(part)
    if digest != sha256:
        part.unlink()
        raise DownloadError(
            f"{url} has sha256 {digest[:12]}..., not the announced {sha256[:12]}...; the download was thrown away"
        )
    os.replace(part, out)
    return out


def _fetch(url: str, part: Path, have: int, size: int, timeout: float) -> None:
    """Append bytes ``have`` onwards of ``url`` to ``part``."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) checked by the caller
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: the server answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url} cannot be reached ({reason}); the kiosk tries again") from exc
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            logger.info("%s does not resume downloads; fetching it whole", url)
            have = 0
        if have:
            logger.info("resuming the download of %s at byte %d of %d", url, have, size)
        with open(part, "ab" if have else "wb") as target:
            written = have
            try:
                while chunk := response.read(_CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise DownloadError(f"{url} is larger than the announced {size} bytes; the download was stopped")
                    target.write(chunk)
            except (OSError, TimeoutError) as exc:
                raise DownloadError(f"{url}: the download was cut at byte {written} ({exc}); it resumes there") from exc
            finally:
                target.flush()
                os.fsync(target.fileno())
    if written < size:  # the server closed the connection early: http.client returns what came, without an error
        raise DownloadError(f"{url}: the download was cut at byte {written} of {size}; it resumes there")
