"""OpenVINO backend: device choice on faked device lists, fallback, cache, async queue."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tillsight
from tillsight.errors import BackendUnavailableError
from tillsight.runtimes.openvino import select_device

from ..conftest import requires_nncf


@pytest.mark.parametrize(
    ("requested", "fallbacks", "available", "chosen", "warns"),
    [
        ("GPU", ["CPU"], ["CPU", "GPU"], "GPU", False),
        ("GPU", ["CPU"], ["CPU", "GPU.0", "GPU.1"], "GPU", False),
        ("GPU.1", [], ["CPU", "GPU.0", "GPU.1"], "GPU.1", False),
        ("GPU", ["CPU"], ["CPU"], "CPU", True),
        ("GPU.1", ["GPU.0", "CPU"], ["CPU", "GPU.0"], "GPU.0", True),
        ("AUTO", [], ["CPU"], "AUTO", False),
        ("", [], ["CPU"], "CPU", False),
    ],
)
def test_device_selection(requested, fallbacks, available, chosen, warns):
    device, warning = select_device(requested, fallbacks, available)
    assert device == chosen and (warning is not None) == warns
    if warns:
        assert requested in warning and chosen in warning


def test_missing_gpu_without_fallback_is_a_clear_error():
    with pytest.raises(BackendUnavailableError, match=r"needs OpenVINO device GPU but this machine has CPU.*device_fallbacks"):
        select_device("GPU", [], ["CPU"])


@pytest.fixture(scope="module")
def nuc_bundle(tiny_model_file, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("nuc")
    return tillsight.convert(
        tiny_model_file, "intel-nuc-iris-xe", calibration=photos.train_list, labels=photos.labels_file, out=out
    ).path


@pytest.mark.integration
@requires_nncf
def test_profile_without_fallback_refuses_to_load_without_a_gpu(nuc_bundle, tmp_path):
    strict = shutil.copytree(nuc_bundle, tmp_path / "strict")
    manifest = json.loads((strict / "manifest.json").read_text())
    manifest["runtime"]["options"]["device_fallbacks"] = []
    (strict / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailableError, match="needs OpenVINO device GPU"):
        tillsight.load(strict)


@pytest.mark.integration
@requires_nncf
def test_cache_dir_is_created_and_reused(nuc_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("TILLSIGHT_CACHE_DIR", str(tmp_path / "cache"))
    with tillsight.load(nuc_bundle) as classifier:
        assert classifier.backend.cache_dir == tmp_path / "cache" / "openvino"
        assert classifier.backend.fallback_reason is not None  # no iGPU here: CPU, as allowed
    cached = sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir())
    assert cached, "compiled model not cached"
    with tillsight.load(nuc_bundle):
        pass
    assert sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir()) == cached


@pytest.mark.integration
@requires_nncf
def test_throughput_load_runs_many_frames_in_parallel_streams_with_the_same_scores(nuc_bundle, photos):
    """Multi-lane kiosks load with throughput=True: the THROUGHPUT hint and an async queue give
    every real photo the scores one synchronous request gives it."""
    from tillsight.datasets import read_image

    frames = [read_image(path) for path, _ in photos.eval_items[:6]]
    with tillsight.load(nuc_bundle) as latency:
        assert latency.backend.performance_hint == "LATENCY"
        tensors = [latency.prepare(frame) for frame in frames]
        one_by_one = [latency.infer(tensor) for tensor in tensors]
    with tillsight.load(nuc_bundle, throughput=True) as throughput:
        assert throughput.backend.performance_hint == "THROUGHPUT"
        many = throughput.infer_many(tensors)
    assert len(many) == len(frames)
    for alone, together in zip(one_by_one, many, strict=True):
        assert int(np.argmax(alone)) == int(np.argmax(together))
        np.testing.assert_allclose(alone, together, atol=0.02)


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ("fpu sse4_2 avx2 avx512f avx512_vnni", "x86_64", True),  # Cascade Lake and later Xeons, 11th-gen Core
        ("fpu sse4_2 avx2 avx_vnni", "x86_64", True),  # Alder Lake
        ("fpu sse4_2 avx2 fma", "x86_64", False),  # AVX2 only: int8 pairs sum into saturating int16
        ("fpu sse4_2 avx2", "aarch64", True),  # ARM's int8 kernels have no such overflow
        (None, "x86_64", None),  # no /proc/cpuinfo: cannot tell
    ],
)
def test_cpu_has_vnni_reads_the_cpu_flags(flags, machine, expected, tmp_path):
    from tillsight.runtimes.openvino import cpu_has_vnni

    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_vnni(cpuinfo, machine) is expected


@pytest.mark.integration
@requires_nncf
def test_8_bit_weights_on_a_cpu_without_vnni_run_their_int8_in_f32_and_classify_the_same(nuc_bundle, photos, monkeypatch, caplog):
    """Without VNNI the CPU's int8 kernels overflow 8-bit weights; there the IR runs its quantized graph in f32,
    which computes what the int8 kernels compute where they do not overflow."""
    import logging

    from tillsight.datasets import read_image
    from tillsight.runtimes import openvino as backend

    def convolution_precisions(classifier) -> set[str]:
        ops = classifier.backend._compiled.get_runtime_model().get_ops()
        info = [op.get_rt_info() for op in ops]
        return {i["runtimePrecision"].astype(str) for i in info if i["layerType"].astype(str) == "Convolution"}

    frames = [read_image(path) for path, _ in photos.eval_items]
    with tillsight.load(nuc_bundle) as native:
        manifest = native.bundle.manifest
        assert manifest.quantization["weight_bits"] == 8 and manifest.runtime.options["cpu_needs_vnni"]
        expected = [native.infer(native.prepare(frame)) for frame in frames]
        assert convolution_precisions(native) & {"i8", "u8"}, "the int8 kernels did not run: the comparison proves nothing"
    monkeypatch.setattr(backend, "cpu_has_vnni", lambda: False)
    caplog.set_level(logging.WARNING, logger="tillsight.runtimes.openvino")
    with tillsight.load(nuc_bundle) as simulated:
        assert convolution_precisions(simulated) == {"f32"}
        scores = [simulated.infer(simulated.prepare(frame)) for frame in frames]
    assert any("has no VNNI" in r.getMessage() and "int8_weight_bits = 7" in r.getMessage() for r in caplog.records)
    assert [int(np.argmax(s)) for s in scores] == [int(np.argmax(s)) for s in expected]
    np.testing.assert_allclose(np.stack(scores), np.stack(expected), atol=0.02)


@pytest.mark.integration
@requires_nncf
def test_8_bit_weights_that_auto_puts_on_a_cpu_without_vnni_are_refused(nuc_bundle, monkeypatch):
    """AUTO chooses the device itself, so the CPU's f32 settings cannot be given: one line naming the fix."""
    from tillsight.runtimes import openvino as backend

    monkeypatch.setattr(backend, "cpu_has_vnni", lambda: False)
    with pytest.raises(BackendUnavailableError, match="overflow on a CPU without VNNI, and AUTO chose the CPU: name the device"):
        backend.OpenVINOBackend(nuc_bundle / "model.xml", "AUTO", cpu_needs_vnni=True)
    monkeypatch.setattr(backend, "cpu_has_vnni", lambda: True)
    backend.OpenVINOBackend(nuc_bundle / "model.xml", "AUTO", cpu_needs_vnni=True).close()
