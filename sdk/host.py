"""The machine figures come from: its CPU named as Linux reports it, its cores, its packages.

One description for every figure tillsight measures (``tillsight benchmark``, the conversion's host
latency, the bench), so that a report can tell which ones come from the same machine.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = ["HostInfo", "cpu_model", "describe_cpu", "package_versions"]

# ARM's "CPU part" numbers of the cores found in kiosk-class boards (Raspberry Pi, Coral Dev Board, Jetson).
_ARM_CORES = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd4f": "Neoverse-V2",
}


@dataclasses.dataclass(frozen=True)
class HostInfo:
    """The machine the figures come from."""

    cpu: str
    cores: int
    machine: str
    system: str
    python: str

    @classmethod
    def current(cls) -> HostInfo:
        """This machine."""
        return cls(cpu_model(), os.cpu_count() or 1, platform.machine(), platform.system(), platform.python_version())

    def describe(self) -> str:
        """One line: the CPU, its cores, the system (what every figure names as where it was measured)."""
        return f"{self.cpu}, {self.cores} cores, {self.system} {self.machine}"


def cpu_model() -> str:
    """The CPU's model as Linux reports it (``/proc/cpuinfo``, then ``lscpu``), with the board when it names one.

    x86: ``AMD EPYC 7B13``; a Raspberry Pi 4: ``Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)``.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    try:
        board = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        board = ""
    found = describe_cpu(cpuinfo, board, _lscpu_model)
    return found or platform.processor() or f"{platform.machine()} CPU (model not reported by /proc/cpuinfo or lscpu)"


def describe_cpu(cpuinfo: str, board: str = "", lscpu_model: Any = lambda: "") -> str:
    """The CPU named from ``/proc/cpuinfo`` text: x86's ``model name``; on ARM, the core decoded from
    ``CPU part`` (else lscpu's model name), after the board (cpuinfo's ``Model`` line or the device tree's)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if value and key not in fields:
            fields[key] = value
    named = fields.get("model name", "")
    if named and not named.startswith("ARMv"):  # x86; ARM kernels may say only "ARMv8 Processor rev 3 (v8l)"
        core = named
    else:
        core = _ARM_CORES.get(fields.get("cpu part", "").lower(), "") or lscpu_model() or named
    named_board = fields.get("model", "")
    board = board or ("" if named_board.isdigit() else named_board)  # x86's "model" is a number
    if board and core and core != named:
        return f"{board} ({core})"
    return core or board


def _lscpu_model() -> str:
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip() not in ("", "-"):
            return value.strip()
    return ""


def package_versions() -> dict[str, str]:
    """Versions of tillsight and of the runtime packages installed here."""
    from importlib import metadata  # here, not at the top: it costs `import tillsight` about 20 ms

    versions = {"tillsight": __version__, "python": platform.python_version()}
    for name in ("numpy", "opencv-python-headless", "opencv-python", "ai-edge-litert", "tflite-runtime", "openvino"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
