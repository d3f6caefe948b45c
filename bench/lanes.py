"""Multi-lane kiosks: frames per second per lane for 1, 2 and 3 lanes on one model, against one lane alone.

    python bench/lanes.py [--bundle sdk/demo_assets/classifier] [--bundle out/bundles/intel-nuc-iris-xe] [--repeats 5]

Every lane plays the demo checkout video (605 frames, 10 fps, 13 products) as fast as the
kiosk can take it (no pacing: the capacity, not the camera's rate), on its tray region. Lanes
share one classifier, loaded with ``throughput=True`` when there are several (OpenVINO's
THROUGHPUT hint and async queue; TFLite runs a turn's frames one after another). Each lane
must end with the video's basket, or the run counts as failed. The lane counts are measured
in rotating order, ``--repeats`` times each; medians. Writes ``bench/LANES.md`` and puts that
section into ``bench/RESULTS.md`` (before its targets), where ``render_results.py`` keeps it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from sections import SECTION_FILES, publish

HEADING = "## Multi-lane kiosk"


def measure(bundle: Path, lanes: int, video: Path, roi: tuple[int, int, int, int], expected: dict[str, int]) -> dict:
    """One run of ``lanes`` lanes: wall time, frames per lane, whether every basket is the video's."""
    import tillsight
    from tillsight.pipelines import Basket, Lane, MultiLanePipeline, PipelineOptions, open_source

    ids = [str(i + 1) for i in range(lanes)]
    baskets = [Basket(lane=lane_id) for lane_id in ids]
    with tillsight.load(bundle, throughput=lanes > 1) as classifier:
        pipeline = MultiLanePipeline(
            [Lane(lane_id, open_source(video), roi) for lane_id in ids],
            classifier,
            baskets,
            PipelineOptions(metrics_interval=0),
        )
        started = time.perf_counter()
        metrics = pipeline.run()
        wall = time.perf_counter() - started
        hint = getattr(classifier.backend, "performance_hint", None)
        engine = classifier.backend.engine
    frames = [metrics[lane_id].frames_processed for lane_id in ids]
    return {
        "lanes": lanes,
        "wall_s": wall,
        "frames": frames,
        "classified": [metrics[i].frames_classified for i in ids],
        "lane_fps": statistics.median(f / wall for f in frames),
        "total_fps": sum(frames) / wall,
        "baskets_ok": all(basket.items() == expected and not basket.unknown for basket in baskets),
        "engine": engine,
        "hint": hint,
    }


def bench(bundles: list[Path], counts: list[int], repeats: int, video: Path, roi, expected) -> list[dict]:
    rows = []
    for bundle in bundles:
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for repeat in range(repeats):
            order = counts[repeat % len(counts) :] + counts[: repeat % len(counts)]  # spread drift over the counts
            for n in order:
                run = measure(bundle, n, video, roi, expected)
                runs[n].append(run)
                print(
                    f"{bundle.name}: {n} lane(s), {run['lane_fps']:.1f} fps per lane, baskets ok: {run['baskets_ok']}",
                    file=sys.stderr,
                )
        manifest = json.loads((bundle / "manifest.json").read_text())
        for n in counts:
            rows.append(
                {
                    "bundle": str(bundle),
                    "profile": manifest.get("profile", {}).get("name", bundle.name),
                    "lanes": n,
                    "engine": runs[n][0]["engine"],
                    "hint": runs[n][0]["hint"],
                    "lane_fps": statistics.median(r["lane_fps"] for r in runs[n]),
                    "total_fps": statistics.median(r["total_fps"] for r in runs[n]),
                    "classified_share": sum(runs[n][0]["classified"]) / sum(runs[n][0]["frames"]),
                    "baskets_ok": sum(r["baskets_ok"] for r in runs[n]),
                    "runs": len(runs[n]),
                }
            )
    return rows


def render(rows: list[dict], repeats: int, threads_note: str) -> str:
    lines = [
        f"{HEADING} (lanes on one model, the demo video on every lane, unpaced)",
        "",
        f"Frames per second per lane when 1, 2 and 3 lanes share one classifier in one process, against one lane alone "
        f"(median of {repeats} runs per row, lane counts in rotating order; {threads_note}). Each lane plays the demo checkout "
        f"video (605 frames; the model runs on the {rows[0]['classified_share']:.0%} with an item on the tray) as fast as the kiosk takes it, so these are "
        "capacities; a 10 fps camera per lane needs 10. `baskets` counts runs where every lane ended with the video's exact basket.",
        "Refresh with `python bench/lanes.py` (see its docstring).",
        "",
        "| bundle | engine | lanes | fps per lane | vs one lane alone | all lanes fps | vs one lane alone | baskets |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        alone = next(r for r in rows if r["bundle"] == row["bundle"] and r["lanes"] == 1)
        hint = f", {row['hint']}" if row["hint"] else ""
        lines.append(
            f"| {row['profile']} | {row['engine']}{hint} | {row['lanes']} | {row['lane_fps']:.1f} | "
            f"{row['lane_fps'] / alone['lane_fps']:.2f}x | {row['total_fps']:.1f} | {row['total_fps'] / alone['total_fps']:.2f}x | "
            f"{row['baskets_ok']}/{row['runs']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    from tillsight.demo import ASSETS, demo_script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", help="a bundle (repeat; default: the demo bundle)")
    parser.add_argument("--lanes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    script = demo_script()
    bundles = args.bundle or [ASSETS / "classifier"]
    rows = bench(bundles, sorted(args.lanes), args.repeats, ASSETS / script.video, script.roi, script.expected_basket)
    from tillsight.host import HostInfo

    note = f"{HostInfo.current().describe()}, each bundle at its profile's threads"
    section = render(rows, args.repeats, note)
    publish(section, SECTION_FILES[0])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(section)
    return 0 if all(row["baskets_ok"] == row["runs"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
