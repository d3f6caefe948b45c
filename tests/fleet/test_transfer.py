"""Packing, downloading (over a real HTTP server, resumed after a cut) and unpacking a bundle."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tillsight.demo import ASSETS
from tillsight.errors import BundleError, DownloadError
from tillsight.fleet import download, pack_bundle, unpack_bundle

from .helpers import CuttingServer, HttpServer, needs_rangehttpserver


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, str]:
    served = tmp_path / "served"
    served.mkdir()
    digest = pack_bundle(ASSETS / "classifier", served / "demo.tar")
    return served / "demo.tar", digest


def test_a_bundle_packs_to_the_same_bytes_every_time_and_unpacks_to_its_files(tmp_path: Path, packed):
    path, digest = packed
    assert pack_bundle(ASSETS / "classifier", tmp_path / "again.tar") == digest
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    unpack_bundle(path, tmp_path / "out")
    for original in (ASSETS / "classifier").iterdir():
        assert (tmp_path / "out" / original.name).read_bytes() == original.read_bytes()


def test_unpacking_refuses_a_path_outside_the_bundle(tmp_path: Path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(BundleError, match="not a plain file of a bundle"):
        unpack_bundle(evil, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "out").exists()


@needs_rangehttpserver
def test_a_download_cut_halfway_resumes_where_it_stopped(tmp_path: Path, packed):
    path, digest = packed
    size = path.stat().st_size
    target = tmp_path / "kiosk" / "demo.tar"
    cutting = CuttingServer(path, size // 2)
    try:
        with pytest.raises(DownloadError, match="cut at byte"):
            download(cutting.url("demo.tar"), target, digest, size, timeout=5)
    finally:
        cutting.stop()
    part = target.with_name("demo.tar.part")
    assert part.stat().st_size == size // 2 and not target.exists()
    server = HttpServer(path.parent)
    try:
        download(server.url("demo.tar"), target, digest, size)
        requests = server.requests()
    finally:
        server.stop()
    assert target.read_bytes() == path.read_bytes() and not part.exists()
    assert len(requests) == 1 and '" 206 ' in requests[0], requests  # one range request for the second half


@needs_rangehttpserver
def test_a_download_of_another_file_or_a_larger_one_is_thrown_away(tmp_path: Path, packed):
    path, digest = packed
    size = path.stat().st_size
    server = HttpServer(path.parent)
    try:
        with pytest.raises(DownloadError, match="not the announced"):
            download(server.url("demo.tar"), tmp_path / "a.tar", "0" * 64, size)
        assert not (tmp_path / "a.tar.part").exists() and not (tmp_path / "a.tar").exists()
        with pytest.raises(DownloadError, match="larger than the announced"):
            download(server.url("demo.tar"), tmp_path / "b.tar", digest, size - 1000)
        assert not (tmp_path / "b.tar").exists()
        with pytest.raises(DownloadError, match="404"):
            download(server.url("missing.tar"), tmp_path / "c.tar", digest, size)
    finally:
        server.stop()
    with pytest.raises(DownloadError, match="cannot be reached"):
        download(server.url("demo.tar"), tmp_path / "d.tar", digest, size, timeout=2)
