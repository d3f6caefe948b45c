"""A plain (non-editable) wheel install works in a fresh virtual environment."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import DATA, REPO, REQUIRED_PROFILES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout. No build isolation and no index: nothing is downloaded at test time."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = dist.glob("tillsight-*.whl")
    return built


def _venv_seeing(env_dir: Path, folders: list[Path]) -> Path:
    """A fresh venv whose interpreter also imports from ``folders`` (one .pth path line each); its python."""
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    (Path(venv_site) / "outer-packages.pth").write_text("".join(f"{folder}\n" for folder in folders))
    return python


def _requirements_closure(names: list[str]) -> set[str]:
    """The installed distributions ``names`` need, themselves included (markers evaluated here, extras not followed)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    found: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        found.add(key)
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def _device_site(folder: Path, distributions: set[str]) -> Path:
    """A site folder holding links to exactly these distributions' files (their top-level entries)."""
    from importlib import metadata

    folder.mkdir()
    for name in distributions:
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        for entry in {Path(str(f)).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            if not (folder / entry).exists():
                (folder / entry).symlink_to(base / entry)
    return folder


def test_the_device_wheel_with_only_the_tflite_extra_benchmarks_and_validates_without_tensorflow(wheel: Path, tmp_path: Path):
    # Only what `tillsight[tflite]` needs is visible (no TensorFlow, no OpenVINO), as on a device;
    # the packages come from this interpreter instead of the index.
    device = _requirements_closure(["numpy", "opencv-python-headless", "tqdm", "msgspec", "ai-edge-litert"])
    assert not any(name.startswith(("tensorflow", "keras", "openvino")) for name in device)
    env_dir = tmp_path / "device-venv"
    python = _venv_seeing(env_dir, [_device_site(tmp_path / "device-site", device)])
    subprocess.run(  # the extra's requirements must be met by what is there: --no-index fails otherwise
        [str(python), "-m", "pip", "install", "--no-index", f"tillsight[tflite] @ {wheel.as_uri()}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True, timeout=120).returncode != 0

    tillsight_cli = str(env_dir / "bin" / "tillsight")
    bundle = subprocess.run(
        [str(python), "-c", "from tillsight.demo import ASSETS; print(ASSETS / 'classifier')"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    assert bundle.startswith(str(env_dir))
    bench = subprocess.run(
        [tillsight_cli, "benchmark", bundle, "--frames", "10", "--json", str(tmp_path / "device.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert bench.returncode == 0, bench.stderr
    document = json.loads((tmp_path / "device.json").read_text())
    (result,) = document["results"]
    assert result["engine"].startswith("ai_edge_litert") and "tensorflow" not in document["versions"]
    val = subprocess.run(
        [tillsight_cli, "val", bundle, str(DATA / "val.txt"), "--out", str(tmp_path / "val"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert val.returncode == 0, val.stderr
    assert "top-1" in val.stdout and (tmp_path / "val" / "val.md").is_file()


def test_wheel_installs_into_a_fresh_venv_and_ships_the_profiles(wheel: Path, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"tillsight/device_profiles/{name}.toml" for name in REQUIRED_PROFILES} <= set(names)
    assert "tillsight/converters/tflite.py" in names and "tillsight/runtimes/tflite.py" in names
    assert "tillsight/pipelines/pipeline.py" in names
    assert {
        "tillsight/demo_assets/checkout.mp4",
        "tillsight/demo_assets/checkout.json",
        "tillsight/demo_assets/DATA-LICENSE.txt",
        "tillsight/demo_assets/classifier/model.tflite",
        "tillsight/demo_assets/classifier/manifest.json",
        "tillsight/demo_assets/classifier/conformance.npz",
        "tillsight/fleet/agent.py",
        "tillsight/schemas/fleet-desired.schema.json",
    } <= set(names)
    assert not any(name.startswith(("sdk/", "tests/")) for name in names)

    # The venv sees this interpreter's packages (numpy, OpenCV, LiteRT) but gets its own tillsight.
    # A .pth line per site-packages folder, not system_site_packages: that would be the base
    # interpreter's, not those of a venv running this test. Path lines run no .pth hooks of those
    # folders, so this checkout's editable install stays out of the venv.
    env_dir = tmp_path / "venv"
    python = _venv_seeing(env_dir, [Path(folder) for folder in site.getsitepackages()])
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    where = subprocess.run(
        [str(python), "-c", "import tillsight, sys; print(tillsight.__file__); print('tensorflow' in sys.modules)"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    assert where[0].startswith(str(env_dir)) and where[1] == "False"
    listing = subprocess.run(
        [str(env_dir / "bin" / "tillsight"), "profiles"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert REQUIRED_PROFILES <= {line.split()[0] for line in listing.splitlines()}

    # The main job works right after install, from anywhere, without TensorFlow.
    demo = subprocess.run(
        [
            str(python),
            "-c",
            "import sys; from tillsight.cli import main; code = main(['demo']); "
            "print('tensorflow' in sys.modules); sys.exit(code)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    assert "matches the video's script" in demo.stdout and demo.stdout.split()[-1] == "False"
