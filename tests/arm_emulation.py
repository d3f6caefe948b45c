"""Run Python on emulated aarch64 (QEMU user mode), for the ARM conformance tests.

The pieces, fetched once from the package registries and cached (``$TILLSIGHT_ARM_CACHE``,
default ``~/.cache/tillsight/aarch64-emulation``):

* a static ``qemu-aarch64`` from Debian trixie's ``qemu-user`` package (QEMU 10). QEMU 7.2
  from bookworm shows the host's x86 ``/proc/cpuinfo`` and LiteRT crashes on it;
* an arm64 Debian bookworm ``python3.11`` with its libraries, unpacked with ``dpkg-deb -x``
  (apt runs with its own state folder and ``APT::Architecture=arm64``: no chroot, no binfmt,
  nothing installed on the host);
* aarch64 wheels of ai-edge-litert and of tillsight's dependencies, by pip with
  ``--platform`` tags, into a target folder.

Always pass a real CPU model (``cortex-a72`` is the Raspberry Pi 4, ``cortex-a76`` the Pi 5):
QEMU's default ``-cpu max`` has SME, with which XNNPACK returns wrong numbers without any error.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("TILLSIGHT_ARM_CACHE", Path.home() / ".cache" / "tillsight" / "aarch64-emulation"))
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# tillsight's own dependencies and the runtime; the cached folder's name follows this list, so a new
# dependency gives a new folder rather than an old one without it.
WHEELS = ("ai-edge-litert==2.3.*", "numpy>=2,<2.5", "opencv-python-headless", "msgspec>=0.18", "tqdm>=4.60")
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")


class Unavailable(Exception):
    """The emulation pieces cannot be fetched here (no apt, no network to the registries)."""


def _run(command: list[str], what: str, **kwargs) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{what}: {exc}") from exc
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise Unavailable(f"{what} failed: {lines[-1] if lines else result.returncode}")


def _apt_download(work: Path, suite: str, arch: str, packages: list[str], resolve: bool) -> list[Path]:
    """Debian packages (with their dependencies when ``resolve``) into ``work``, via a private apt state."""
    if shutil.which("apt-get") is None or not KEYRING.is_file():
        raise Unavailable("apt-get and Debian's archive keyring are needed to fetch the emulation pieces")
    for folder in ("state/lists/partial", "cache/archives/partial", "sources"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    (work / "state" / "status").touch()
    (work / "sources" / f"{suite}.sources").write_text(
        f"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite}\nComponents: main\nSigned-By: {KEYRING}\n"
    )
    options = [
        f"-oDir::State={work / 'state'}",
        f"-oDir::State::status={work / 'state' / 'status'}",
        f"-oDir::Cache={work / 'cache'}",
        "-oDir::Etc::SourceList=/dev/null",
        f"-oDir::Etc::SourceParts={work / 'sources'}",
        f"-oAPT::Architecture={arch}",
        f"-oAPT::Architectures={arch}",
        "-oDebug::NoLocking=1",
    ]
    _run(["apt-get", *options, "update"], f"apt-get update ({suite} {arch})")
    if resolve:
        _run(
            ["apt-get", *options, "install", "-y", "--download-only", "--no-install-recommends", *packages],
            f"downloading {' '.join(packages)} ({suite} {arch})",
        )
        return sorted((work / "cache" / "archives").glob("*.deb"))
    _run(["apt-get", *options, "download", *packages], f"downloading {' '.join(packages)} ({suite} {arch})", cwd=work)
    return sorted(work.glob("*.deb"))


def _cached(name: str, build) -> Path:
    """``CACHE/name``, built into a temporary folder and renamed into place (no half-built caches)."""
    target = CACHE / name
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        built = build(Path(work))
        built.rename(target)
    return target


def _build_qemu(work: Path) -> Path:
    (deb,) = _apt_download(work / "apt", "trixie", "amd64", ["qemu-user"], resolve=False)
    _run(["dpkg-deb", "-x", str(deb), str(work / "x")], "unpacking qemu-user")
    out = work / "qemu"
    out.mkdir()
    shutil.move(str(work / "x" / "usr" / "bin" / "qemu-aarch64"), out / "qemu-aarch64")
    return out


def _build_rootfs(work: Path) -> Path:
    root = work / "rootfs"
    for deb in _apt_download(work / "apt", "bookworm", "arm64", ["python3.11", "libstdc++6"], resolve=True):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
    return root


def _build_site(work: Path) -> Path:
    site = work / "site"
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(site),
            *platforms,
            "--implementation",
            "cp",
            "--python-version",
            "3.11",
            "--abi",
            "cp311",
            "--only-binary=:all:",
            *WHEELS,
        ],
        "pip download of aarch64 wheels",
    )
    return site


class Aarch64Python:
    """An emulated arm64 python3.11 with LiteRT, numpy, OpenCV and this checkout's tillsight."""

    def __init__(self, repo: Path, workdir: Path):
        """Fetch (or reuse) the cached pieces and install this checkout's tillsight wheel for it.

        Raises:
            Unavailable: The pieces cannot be fetched here.
        """
        if platform.machine() not in ("x86_64", "AMD64"):
            raise Unavailable(f"the emulation recipe is for x86-64 hosts, this is {platform.machine()}")
        self.qemu = _cached("qemu", _build_qemu) / "qemu-aarch64"
        self.rootfs = _cached("rootfs", _build_rootfs)
        self.site = _cached(f"site-{hashlib.sha256(' '.join(WHEELS).encode()).hexdigest()[:12]}", _build_site)
        wheel_dir = workdir / "wheel"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(repo)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (wheel,) = wheel_dir.glob("tillsight-*.whl")
        self.package = workdir / "tillsight-pkg"
        zipfile.ZipFile(wheel).extractall(self.package)

    def run(self, script: str, *args: str, cpu: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a Python script on the emulated CPU; stdout/stderr captured as text."""
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(CACHE),
            "PYTHONPATH": f"{self.package}:{self.site}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "TILLSIGHT_CACHE_DIR": str(CACHE / "runtime-cache"),
        }
        command = [
            str(self.qemu),
            "-cpu",
            cpu,
            "-L",
            str(self.rootfs),
            str(self.rootfs / "usr/bin/python3.11"),
            "-c",
            script,
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
