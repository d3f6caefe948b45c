"""Bounded soak: thousands of frames from a looping video through the real demo classifier.

RSS must not grow after warm-up, frame age must stay bounded, and no thread may outlive the
pipeline. ``TILLSIGHT_SOAK_FRAMES`` makes it longer (the CI budget is 3000 frames).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from tillsight import load
from tillsight.demo import ASSETS, demo_script
from tillsight.pipelines import Basket, CheckoutOptions, CheckoutPipeline, PipelineOptions, VideoFileSource

FRAMES = int(os.environ.get("TILLSIGHT_SOAK_FRAMES", "3000"))
WARM_UP = 500


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.soak
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc (Linux)")
def test_a_long_run_does_not_grow_stall_or_leak_threads():
    script = demo_script()
    threads_before = set(threading.enumerate())
    options = PipelineOptions(checkout=CheckoutOptions(roi=script.roi), metrics_interval=0, max_frames=FRAMES)
    basket = Basket()
    with load(ASSETS / "classifier") as classifier:
        pipeline = CheckoutPipeline(VideoFileSource(ASSETS / script.video, loop=True), classifier, [basket], options)
        pipeline.start()
        baseline, peak_after_warm_up = None, 0
        while not pipeline.join(timeout=0.2):
            processed = pipeline.metrics().frames_processed
            if baseline is None and processed >= WARM_UP:
                baseline = rss_bytes()
            elif baseline is not None:
                peak_after_warm_up = max(peak_after_warm_up, rss_bytes())
        metrics = pipeline.metrics()
    time.sleep(0.1)
    assert metrics.frames_processed == FRAMES and metrics.frame_errors == 0 and metrics.inference_errors == 0
    loops = FRAMES / script.frames
    assert sum(basket.items().values()) >= int(loops) * len(script.placements)  # every pass rings up its items
    assert baseline is not None
    growth_mb = (max(peak_after_warm_up, rss_bytes()) - baseline) / 2**20
    print(
        f"soak: {FRAMES} frames, RSS growth after warm-up {growth_mb:.2f} MB, frame age p99 {metrics.frame_age.p99_ms:.1f} ms, {metrics.fps:.0f} fps"
    )
    assert growth_mb < 10, f"RSS grew {growth_mb:.1f} MB after warm-up"
    assert metrics.frame_age.p99_ms < 250
    assert not [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
