"""Real servers for the fleet tests: an HTTP server with Range requests, one that cuts its first answer, signed bundles."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.broker import free_port
from tillsight.bundle import sha256_of_file
from tillsight.conformance import CONFORMANCE_FILE
from tillsight.demo import ASSETS

needs_rangehttpserver = pytest.mark.skipif(
    __import__("importlib").util.find_spec("RangeHTTPServer") is None, reason="pip install rangehttpserver (the test extra)"
)


def wait_until(condition, timeout: float = 60.0) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (polled every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


class HttpServer:
    """``python -m RangeHTTPServer`` serving ``folder`` on 127.0.0.1 in its own process; its request log is kept."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.log = folder.parent / f"http-{self.port}.log"
        self._log_handle = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "RangeHTTPServer", str(self.port), "--bind", "127.0.0.1"],
            cwd=folder,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("RangeHTTPServer did not start")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def requests(self) -> list[str]:
        self._log_handle.flush()
        return [line for line in self.log.read_text().splitlines() if '"GET ' in line]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._log_handle.close()


class CuttingServer:
    """An HTTP server (in a thread) that sends only the first ``cut`` bytes of a file and then closes the connection."""

    def __init__(self, path: Path, cut: int):
        data = path.read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def demo_bundle_copy(folder: Path, key: Path | None, wrong_conformance: bool = False) -> Path:
    """The shipped demo bundle, copied, signed with ``key``; with ``wrong_conformance`` its conformance set records
    other top-1 results than its model gives (what a kiosk with a wrong runtime would see)."""
    from tillsight.signing import sign_bundle

    shutil.copytree(ASSETS / "classifier", folder)
    if wrong_conformance:
        with np.load(folder / CONFORMANCE_FILE) as data:
            arrays = dict(data)
        arrays["top1"] = (arrays["top1"] + 1) % arrays["scores"].shape[1]
        np.savez_compressed(folder / CONFORMANCE_FILE, **arrays)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["artifacts"][CONFORMANCE_FILE] = {
            "sha256": sha256_of_file(folder / CONFORMANCE_FILE),
            "bytes": (folder / CONFORMANCE_FILE).stat().st_size,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if key is not None:
        sign_bundle(folder, key)
    return folder
