"""A conversion killed mid-way (SIGKILL: no cleanup code runs) leaves the previous bundle intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import tillsight
from tillsight.staging import staged_directory

from ..conftest import one_photo_tolerance


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_conversion_keeps_the_good_bundle(bundle_dir, tiny_model_file, photos, tmp_path):
    out = bundle_dir.parent
    before = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    profile = one_photo_tolerance("raspberry-pi-4", tmp_path, photos)
    command = [
        sys.executable,
        "-m",
        "tillsight",
        "convert",
        str(tiny_model_file),
        "--profile",
        str(profile),
        "--calibration",
        str(photos.train_list),
        "--labels",
        str(photos.labels_file),
        "--out",
        str(out),
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        staging = []
        while time.monotonic() < deadline and process.poll() is None:
            staging = [d for d in out.glob(".tillsight-staging-raspberry-pi-4-*") if any(d.iterdir())]
            if staging:
                break
            time.sleep(0.05)
        assert staging, "the conversion never started writing"
        os.kill(process.pid, signal.SIGKILL)  # mid-write: the staging folder holds a partial model
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == before
    assert tillsight.read_bundle(bundle_dir).manifest.labels == photos.labels  # still verifies
    assert not [p for p in out.iterdir() if not p.name.startswith(".") and p.name != bundle_dir.name]
    # The next run cleans up after the killed one.
    with pytest.raises(RuntimeError), staged_directory(bundle_dir):
        raise RuntimeError("nothing to write")
    assert not list(out.glob(".tillsight-staging-*"))
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == before
