"""A plain (non-editable) wheel install works in a fresh virtual environment."""

from __future__ import annotations

import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO, REQUIRED_PROFILES

pytestmark = pytest.mark.integration


def test_wheel_installs_into_a_fresh_venv_and_ships_the_profiles(tmp_path):
    # No build isolation and no index: nothing is downloaded at test time.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("tillsight-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"tillsight/device_profiles/{name}.toml" for name in REQUIRED_PROFILES} <= set(names)
    assert "tillsight/converters/tflite.py" in names and "tillsight/runtimes/tflite.py" in names
    assert "tillsight/pipelines/pipeline.py" in names
    assert {"tillsight/demo_assets/checkout.mp4", "tillsight/demo_assets/checkout.json", "tillsight/demo_assets/DATA-LICENSE.txt",
            "tillsight/demo_assets/classifier/model.tflite", "tillsight/demo_assets/classifier/manifest.json"} <= set(names)
    assert not any(name.startswith(("sdk/", "tests/")) for name in names)

    # The venv sees this interpreter's packages (numpy, OpenCV, LiteRT) but gets its own tillsight.
    # A .pth line per site-packages folder, not system_site_packages: that would be the base
    # interpreter's, not those of a venv running this test. Path lines run no .pth hooks of those
    # folders, so this checkout's editable install stays out of the venv.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout.strip()
    (Path(venv_site) / "outer-site-packages.pth").write_text("".join(f"{folder}\n" for folder in site.getsitepackages()))
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    where = subprocess.run(
        [str(python), "-c", "import tillsight, sys; print(tillsight.__file__); print('tensorflow' in sys.modules)"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout.split()
    assert where[0].startswith(str(env_dir)) and where[1] == "False"
    listing = subprocess.run(
        [str(env_dir / "bin" / "tillsight"), "profiles"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert REQUIRED_PROFILES <= {line.split()[0] for line in listing.splitlines()}

    # The main job works right after install, from anywhere, without TensorFlow.
    demo = subprocess.run(
        [str(python), "-c", "import sys; from tillsight.cli import main; code = main(['demo']); "
         "print('tensorflow' in sys.modules); sys.exit(code)"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    assert "matches the video's script" in demo.stdout and demo.stdout.split()[-1] == "False"
