"""ARM conformance: the runtime side on emulated aarch64 classifies real photos as on x86.

Runs the raspberry-pi-4 bundle's int8 model with LiteRT's aarch64 build (XNNPACK's ARM
kernels) under QEMU on the Raspberry Pi 4 and 5 CPU models, and compares with this host.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ..arm_emulation import Aarch64Python, Unavailable
from ..conftest import REPO

CLASSIFY = """
import json, platform, sys
import cv2, tillsight
with tillsight.load(sys.argv[1]) as classifier:
    rows = [classifier.scores(cv2.imread(path)).tolist() for path in sys.argv[2:]]
print(json.dumps({"machine": platform.machine(), "engine": classifier.engine, "scores": rows,
                  "cpuinfo": open("/proc/cpuinfo").read(400)}))
"""


BENCHMARK = """
import sys
from tillsight.cli import main
sys.exit(main(["benchmark", sys.argv[1], "--frames", "3", "--json", "-", "--launcher", sys.argv[2]]))
"""


@pytest.fixture(scope="module")
def arm_python(tmp_path_factory):
    try:
        return Aarch64Python(REPO, tmp_path_factory.mktemp("aarch64"))
    except Unavailable as exc:
        pytest.skip(f"aarch64 emulation pieces cannot be fetched here: {exc}")


@pytest.mark.integration
@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a76"])
def test_raspberry_pi_bundle_gives_the_same_results_on_aarch64(arm_python, bundle_dir, photos, cpu):
    import tillsight

    paths = [str(path) for path, _ in photos.eval_items[::3]]  # 19 real held-out photos, all classes
    result = arm_python.run(CLASSIFY, str(bundle_dir), *paths, cpu=cpu)
    assert result.returncode == 0, result.stderr[-2000:]
    arm = json.loads(result.stdout.strip().splitlines()[-1])
    assert arm["machine"] == "aarch64" and "x86" not in arm["cpuinfo"].lower() and "intel" not in arm["cpuinfo"].lower()
    assert arm["engine"].startswith("ai_edge_litert")

    from tillsight.datasets import read_image

    with tillsight.load(bundle_dir) as classifier:
        host = np.array([classifier.scores(read_image(Path(p))) for p in paths])
        step = classifier.backend.output_tensor.scale
    arm_scores = np.array(arm["scores"])
    assert arm_scores.shape == host.shape
    assert (arm_scores.argmax(axis=1) == host.argmax(axis=1)).all()
    assert np.abs(arm_scores - host).max() <= step + 1e-6  # within one quantization step


@pytest.mark.integration
def test_tillsight_benchmark_runs_the_pi_bundle_on_aarch64_and_names_the_core(arm_python, bundle_dir):
    # The measuring process is started through QEMU again: there is no binfmt handler on this host.
    launcher = f"{arm_python.qemu} -cpu cortex-a72 -L {arm_python.rootfs}"
    result = arm_python.run(BENCHMARK, str(bundle_dir), launcher, cpu="cortex-a72")
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout[result.stdout.index("{") :])
    assert document["host"]["machine"] == "aarch64" and "Cortex-A72" in document["host"]["cpu"]
    (measured,) = document["results"]
    assert measured["engine"].startswith("ai_edge_litert") and measured["profile"] == "raspberry-pi-4"
    assert measured["classify"]["runs"] == 3 and measured["invoke"]["p50_ms"] > 0
