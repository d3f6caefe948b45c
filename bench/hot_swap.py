"""A bundle swapped into a running kiosk: frames lost and the time a swap takes, on the demo video.

    python bench/hot_swap.py --runs 3

The demo video plays as a camera would (paced, the newest frame wins) at ``--speed`` times its
frame rate, through the shipped int8 classifier. Each run is paired: once without a swap,
once with a swap every ``--every`` seconds (the demo bundle and a copy of it, in turn, loaded
and warmed beside the running one). Reported: frames dropped and frames processed in both,
the swap's load and switch times, and whether the events (items and labels) are the same.
The section goes to ``bench/HOT_SWAP.md`` and into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from sections import publish

from tillsight.demo import ASSETS, demo_script
from tillsight.kiosk import Kiosk, KioskOptions
from tillsight.pipelines import CaptureOptions, CheckoutOptions, PipelineOptions

HERE = Path(__file__).resolve().parent
SCRIPT = demo_script()


def run_once(speed: float, every: float | None, copies: list[Path]) -> dict:
    pipeline = PipelineOptions(
        checkout=CheckoutOptions(roi=SCRIPT.roi),
        capture=CaptureOptions(pace=True, speed=speed, drop_frames=True),
        metrics_interval=0,
    )
    events: list = []
    kiosk = Kiosk(
        KioskOptions(copies[0], source=str(ASSETS / SCRIPT.video), pipeline=pipeline, version="v0"), sinks=[events.append]
    )
    swaps = []
    done = threading.Event()

    def swapper() -> None:
        turn = 1
        while every is not None and not done.wait(every):
            try:
                swaps.append(kiosk.swap_bundle(copies[turn % 2], f"v{turn}"))
            except RuntimeError:  # the pipeline ended meanwhile
                return
            turn += 1

    thread = threading.Thread(target=swapper)
    kiosk.start()
    thread.start()
    result = kiosk.wait()
    done.set()
    thread.join()
    metrics = result.metrics[""]
    return {
        "dropped": metrics.frames_dropped,
        "processed": metrics.frames_processed,
        "labels": [getattr(e, "label", "unknown") for e in events],
        "load_s": [s.load_s for s in swaps],
        "switch_s": [s.switch_s for s in swaps],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--speed", type=float, default=2.0)
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hot-swap-"))
    copies = [shutil.copytree(ASSETS / "classifier", work / f"copy{i}") for i in range(2)]
    plain, swapped = [], []
    for _ in range(args.runs):
        plain.append(run_once(args.speed, None, copies))
        swapped.append(run_once(args.speed, args.every, copies))
    shutil.rmtree(work, ignore_errors=True)
    loads = [s for run in swapped for s in run["load_s"]]
    switches = [s for run in swapped for s in run["switch_s"]]
    figures = {
        "runs": args.runs,
        "speed": args.speed,
        "swaps": len(loads),
        "dropped_plain": statistics.median(r["dropped"] for r in plain),
        "dropped_swapped": statistics.median(r["dropped"] for r in swapped),
        "processed_plain": statistics.median(r["processed"] for r in plain),
        "processed_swapped": statistics.median(r["processed"] for r in swapped),
        "load_ms": round(1000 * statistics.median(loads), 1),
        "load_max_ms": round(1000 * max(loads), 1),
        "switch_ms": round(1000 * statistics.median(switches), 2),
        "switch_max_ms": round(1000 * max(switches), 2),
        "same_events": all(r["labels"] == plain[0]["labels"] for r in plain + swapped),
        "items": len(plain[0]["labels"]),
    }
    print(json.dumps(figures, indent=2))
    section = f"""## Hot swap on the demo video

`python bench/hot_swap.py --runs {figures["runs"]}` ({time.strftime("%Y-%m-%d")}, this host): the demo video paced at
{figures["speed"]:g}x as a live camera (newest frame wins), the shipped int8 classifier; each run once without a swap
and once with a swap every {args.every:g} s ({figures["swaps"]} swaps in all). Medians of {figures["runs"]} runs.

| | without swaps | with swaps |
|---|---|---|
| frames processed | {figures["processed_plain"]:g} | {figures["processed_swapped"]:g} |
| frames dropped (the camera's newest frame won) | {figures["dropped_plain"]:g} | {figures["dropped_swapped"]:g} |

A swap loads, verifies and warms the new bundle beside the running one in {figures["load_ms"]} ms (median; at most
{figures["load_max_ms"]} ms), then the pipeline takes it between two frames {figures["switch_ms"]} ms after it is handed over
(at most {figures["switch_max_ms"]} ms). The {figures["items"]} items and their labels are
{"the same in every run" if figures["same_events"] else "NOT the same in every run"}.
"""
    publish(section, HERE / "HOT_SWAP.md")


if __name__ == "__main__":
    main()
