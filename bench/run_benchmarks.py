"""Every benchmark of tillsight on this host, side by side with the baselines, in one run.

    python bench/run_benchmarks.py --data ../shared/data/grocery-store

Trains the sample classifier (ImageNet-pretrained EfficientNet-Lite0 fine-tuned on the grocery
train photos, 224 px, centre crop 0.875) first if ``--model`` is not given and none is cached in
``OUT/model`` (about 15 minutes, once).
Then, on the held-out val photos: converts for every device profile (conversion wall
time), measures each bundle (size, gzip size, float/int8 top-1, drop, agreement, latency
p50/p95 at the profile's threads, cold start and peak RSS of a process that only runs the
bundle), the baselines (Keras ``predict``, float TFLite, the plain TFLiteConverter int8
recipe, OpenVINO FP32), a bare ai-edge-litert process, and the checkout pipeline on a
video against the bare-inference bound; then the generic-x86-cpu profile again with
structured and with unstructured pruning, fine-tuned on the train photos. Writes ``OUT/results.json``, ``OUT/results.md``
and PNG plots, and refreshes ``bench/RESULTS.md``. Absolute times are this host's; the
tables report ratios against baselines measured in the same run. Medians throughout.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "samples"))

import baselines  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from compression_rows import pruning_benchmark, qat_benchmark, student_benchmark  # noqa: E402
from render_results import render_markdown  # noqa: E402
from results_schema import BenchResults, results_json, validated  # noqa: E402

import tillsight  # noqa: E402
from tillsight.datasets import iter_images, read_image_set, read_labels  # noqa: E402
from tillsight.host import HostInfo  # noqa: E402
from tillsight.preprocess import InputSpec, preprocess  # noqa: E402
from tillsight.report import plot_accuracy_latency, summarize_bundle  # noqa: E402

PROFILES = (
    "raspberry-pi-4",
    "raspberry-pi-5",
    "generic-x86-cpu",
    "coral-usb",
    "coral-devboard",
    "intel-nuc-iris-xe",
    "intel-celeron-uhd",
)
PLAIN_RECIPE_IMAGES = 200
#: Threads of every latency figure: the bundles and the plain recipe run at the same count, in fresh processes.
THREADS = 2
PLAIN_INT8_FILE = HERE / "results" / "plain_int8.tflite"


def host_description() -> str:
    """The host line of RESULTS.md: the package's own description, with the Python version."""
    return f"{HostInfo.current().describe()}, Python {platform.python_version()}"


def ensure_model(args) -> tuple[Path, Path]:
    if args.model:
        return Path(args.model), Path(args.labels)
    model, labels = args.out / "model" / "grocery_efficientnet_lite0.keras", args.out / "model" / "labels.txt"
    if not model.is_file():
        print("training the EfficientNet-Lite0 sample classifier (once; cached in", model.parent, ")", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(HERE.parent / "samples" / "train_grocery_classifier.py"),
                "--data",
                str(args.data),
                "--out",
                str(model.parent),
            ],
            check=True,
        )
    return model, labels


def load_eval(
    data: Path, labels: tuple[str, ...], size: int, crop: float, list_name: str, count: int | None = None, seed: int = 0
):
    image_set = read_image_set(data / list_name, labels)
    items = list(image_set.images)
    if count is not None:
        items = image_set.spread_over_classes(count, seed)
    spec = InputSpec(height=size, width=size, crop=crop)
    inputs, truth, frames = [], [], []
    for item, image in iter_images(items, []):
        inputs.append(preprocess(image, spec))
        truth.append(item.label_index)
        frames.append(image)
    return np.stack(inputs), np.array(truth), frames


def probe(mode: str, target: Path, image: Path, runs: int, threads: int = 2, size: int = 224, repeats: int = 3) -> dict:
    """Median over ``repeats`` fresh processes: cold start (process start to first result), peak RSS, latency."""
    rows = []
    for _ in range(repeats):
        started = time.time()
        result = subprocess.run(
            [
                sys.executable,
                str(HERE / "probe.py"),
                mode,
                str(target),
                str(image),
                "--runs",
                str(runs),
                "--threads",
                str(threads),
                "--size",
                str(size),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["cold_start_s"] = row["first_result_unix"] - started
        rows.append(row)
    return {
        "cold_start_s": round(statistics.median(r["cold_start_s"] for r in rows), 3),
        "peak_rss_mb": round(statistics.median(r["peak_rss_bytes"] for r in rows) / 2**20, 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in rows), 3),
        "p95_ms": round(statistics.median(r["p95_ms"] for r in rows), 3),
        "engine": rows[0]["engine"],
    }


def pipeline_benchmark(bundle_dir: Path, frames: list[np.ndarray], work: Path, runs: int) -> dict:
    """Frames per second through the checkout pipeline on a video vs the bare-inference bound."""
    from tillsight.pipelines import CheckoutOptions, CheckoutPipeline, PipelineOptions, VideoFileSource

    video = work / "bench.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for frame in frames:  # every frame shows a product: the model runs on each one
        tile = cv2.resize(frame, (240, 240))
        canvas = np.zeros((240, 320, 3), np.uint8)
        canvas[:, 40:280] = tile
        for _ in range(3):
            writer.write(canvas)
    writer.release()
    black = np.zeros((240, 240, 3), np.uint8)  # empty-tray reference: anything on it is an item
    options = PipelineOptions(checkout=CheckoutOptions(roi=(40, 0, 240, 240)), metrics_interval=0)
    with tillsight.load(bundle_dir) as classifier:
        tensor = classifier.prepare(frames[0])
        bare_ms = baselines.timed(lambda: classifier.infer(tensor), runs, warmup=0)["p50_ms"]
        results = []
        for _ in range(3):
            pipeline = CheckoutPipeline(VideoFileSource(video), classifier, [], options, tray_reference=black)
            results.append(pipeline.run())
    best = sorted(results, key=lambda m: m.fps)[1]  # the median run
    bound = 1000.0 / bare_ms
    return {
        "frames": best.frames_processed,
        "classified": best.frames_classified,
        "fps": best.fps,
        "bare_inference_ms": round(bare_ms, 3),
        "bare_bound_fps": round(bound, 1),
        "ratio": round(best.fps / bound, 3),
        "stage_latency": best.to_dict()["stage_latency"],  # name -> p50_ms, p95_ms, p99_ms, runs
        "frame_age": best.to_dict()["frame_age"],
        "threads": classifier.backend.threads,
    }


def main() -> None:
    args = parse_arguments()
    began = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    model_path, labels_path = ensure_model(args)

    import keras

    model = keras.saving.load_model(model_path)
    labels = read_labels(labels_path)
    size = int(model.input_shape[1])
    inputs, truth, frames = load_eval(args.data, labels, size, args.crop, "val.txt")
    calibration, _, _ = load_eval(args.data, labels, size, args.crop, "train.txt", PLAIN_RECIPE_IMAGES)
    print(f"{len(inputs)} held-out photos, {len(calibration)} calibration photos for the plain recipe", flush=True)

    results: dict = {
        "host": host_description(),
        "date": datetime.date.today().isoformat(),
        "model": str(model_path),
        "arguments": sys.argv[1:],
        "input_size": size,
        "crop": args.crop,
        "eval_images": int(len(inputs)),
        "versions": versions(),
    }
    results.update(baseline_rows(model, inputs, truth, calibration, args.runs))
    print("baselines done", flush=True)

    sample_image = args.out / "sample.jpg"
    cv2.imwrite(str(sample_image), frames[0])
    results["bundles"] = bundles = profile_rows(args, model_path, labels_path, sample_image)
    reference = next((b for b in bundles if b["name"] == "generic-x86-cpu"), bundles[0])
    results["plain_int8_process"] = probe("bare", PLAIN_INT8_FILE, sample_image, args.runs, THREADS, size)
    with tempfile.TemporaryDirectory() as work:
        results["bare_process"] = probe("bare", Path(reference["path"]) / "model.tflite", sample_image, args.runs, THREADS, size)
        results["pipeline"] = pipeline_benchmark(Path(reference["path"]), frames, Path(work), args.runs)
    results["pipeline"]["bundle"] = reference["name"]
    results.update(compression_rows(args, model_path, labels_path, reference, sample_image))
    results["wall_time_s"] = round(time.monotonic() - began, 1)
    write_outputs(args, results, model.name)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "grocery-store")
    parser.add_argument("--model", help="a trained Keras classifier (default: train the sample one)")
    parser.add_argument("--labels", help="its labels file (with --model)")
    parser.add_argument("--crop", type=float, default=0.875, help="the model's centre crop fraction (the sample's: 0.875)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES))
    parser.add_argument("--runs", type=int, default=200, help="timed inferences per latency measurement")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--prune-structured",
        nargs="*",
        default=["channels:0.3", "channels:0.5"],
        help="--prune settings of the structured rows (each fine-tuned with distillation)",
    )
    parser.add_argument(
        "--prune-unstructured", default="unstructured:0.5", help="--prune setting of the unstructured row (none: skip it)"
    )
    parser.add_argument("--pruning", action=argparse.BooleanOptionalAction, default=True, help="the pruned rows (default: on)")
    parser.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs of the pruned rows (default: each mode's own)")
    parser.add_argument("--qat-epochs", type=int, default=2, help="epochs of the QAT row (0: skip it)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="training seeds of every row that trains; medians and spreads are reported (default: 0 1 2)",
    )
    parser.add_argument("--student", default="efficientnet-lite0", help="architecture of the distilled student row")
    parser.add_argument("--student-size", type=int, default=160, help="input size of the student (0: the teacher's)")
    parser.add_argument("--student-epochs", type=int, default=4, help="distillation epochs of the student row (0: skip it)")
    args = parser.parse_args()
    if args.model and not args.labels:
        parser.error("--model needs --labels")
    return args


def baseline_rows(model, inputs: np.ndarray, truth: np.ndarray, calibration: np.ndarray, runs: int) -> dict:
    """Keras predict, float TFLite, the plain TFLiteConverter int8 recipe and OpenVINO FP32, on the same photos."""
    keras_row, float_top1 = baselines.keras_float(model, inputs, truth, max(20, runs // 10))
    rows = [keras_row, baselines.tflite_float(model, inputs, truth, float_top1, 2, runs)]
    plain = baselines.tflite_plain_int8(model, inputs, truth, float_top1, calibration, 2, runs)
    plain_bytes = plain.pop("model_bytes")
    gzip_size = len(gzip.compress(plain_bytes, compresslevel=9))
    PLAIN_INT8_FILE.parent.mkdir(parents=True, exist_ok=True)
    PLAIN_INT8_FILE.write_bytes(plain_bytes)  # timed again below in a fresh process, as every bundle is
    rows += [plain, baselines.openvino_fp32(model, inputs, truth, float_top1, 2, runs)]
    return {"baselines": rows, "plain_int8_gzip_bytes": gzip_size}


def write_outputs(args: argparse.Namespace, assembled: dict, model_name: str) -> None:
    """results.json, results.md and the plot under OUT; RESULTS.md, its results.json and its plot in bench/.

    The assembled rows are checked against ``results_schema`` first: a row that lost or renamed a figure
    the report reads stops the run here, with the figure's path, before anything is written.
    """
    results = validated(assembled)
    text = results_json(results)
    (args.out / "results.json").write_text(text)
    plot = plot_accuracy_latency(
        plot_points(results), args.out / "accuracy_latency.png", f"grocery {model_name}, held-out val photos"
    )
    committed_plot = args.results_md.parent / "plots" / "accuracy_latency.png"
    committed_plot.parent.mkdir(parents=True, exist_ok=True)
    committed_plot.write_bytes(plot.read_bytes())
    markdown = render_markdown(results)
    (args.out / "results.md").write_text(markdown)
    args.results_md.write_text(markdown)
    args.results_md.with_name("results.json").write_text(text)  # what RESULTS.md is rendered from
    print(markdown)
    print(f"wrote {args.out / 'results.json'}, {committed_plot} and {args.results_md} in {results.wall_time_s / 60:.1f} minutes")


def profile_rows(args: argparse.Namespace, model_path: Path, labels_path: Path, sample_image: Path) -> list[dict]:
    """Convert for every profile and measure each bundle (summary, conversion time, a process running only it)."""
    bundles = []
    for profile in args.profiles:
        started = time.monotonic()
        bundle = tillsight.convert(
            model_path,
            profile,
            calibration=args.data / "train.txt",
            evaluation=args.data / "val.txt",
            labels=labels_path,
            out=args.out / "bundles",
            options=tillsight.ConversionOptions(allow_accuracy_drop=True, crop=args.crop),
        )
        seconds = time.monotonic() - started
        summary = summarize_bundle(bundle.path)
        process = probe("tillsight", bundle.path, sample_image, args.runs, THREADS)
        bundles.append({**summary.__dict__, "conversion_s": round(seconds, 1), "process": process})
        print(f"{profile}: converted in {seconds:.0f} s, top-1 {summary.converted_top1}%, p50 {process['p50_ms']} ms", flush=True)
    return bundles


def compression_rows(args: argparse.Namespace, model_path: Path, labels_path: Path, reference: dict, sample_image: Path) -> dict:
    """The pruning, QAT and student rows the arguments ask for, each against the reference bundle."""
    rows: dict = {}
    measure = lambda path: probe("tillsight", path, sample_image, args.runs, THREADS)  # noqa: E731
    seeds = tuple(args.seeds)
    if args.pruning:
        unstructured = tillsight.PruningOptions.from_spec(args.prune_unstructured).enabled  # parsed as convert parses it
        settings = {"unstructured": args.prune_unstructured} if unstructured else {}
        settings.update({f"{spec.replace(':', '-')}-distilled": spec for spec in args.prune_structured})
        rows["pruning"] = pruning_benchmark(
            model_path,
            labels_path,
            args.data,
            args.out / "pruned",
            reference,
            measure,
            settings,
            args.finetune_epochs,
            distilled=tuple(name for name in settings if name.endswith("-distilled")),
            crop=args.crop,
            seeds=seeds,
        )
    if args.qat_epochs > 0:
        rows["qat"] = qat_benchmark(
            model_path,
            labels_path,
            args.data,
            args.out / "qat",
            reference,
            measure,
            args.qat_epochs,
            crop=args.crop,
            seeds=seeds,
        )
    if args.student_epochs > 0:
        rows["student"] = student_benchmark(
            model_path,
            labels_path,
            args.data,
            args.out / "student",
            reference,
            measure,
            args.student,
            args.student_epochs,
            student_size=(args.student_size, args.student_size) if args.student_size else None,
            crop=args.crop,
            seeds=seeds,
        )
    return rows


def plot_points(results: BenchResults) -> list[tuple[str, float, float, int]]:
    """(label, p50 ms, top-1, bytes) of every bundle and baseline, for the accuracy-latency plot."""
    reference = results.reference()
    points = [(b.name, b.process.p50_ms, b.converted_top1, b.model_bytes) for b in results.bundles]
    points += [(r.name, r.p50_ms, r.top1, r.bytes) for r in results.baselines]
    points += [(f"{r.profile} {r.setting}", r.process.p50_ms, r.converted_top1, r.model_bytes) for r in results.pruning]
    if results.qat:
        points.append((f"{reference.name} QAT", results.qat.process.p50_ms, results.qat.converted_top1, reference.model_bytes))
    if results.student:
        student = results.student
        points.append((f"student {student.student}", student.process.p50_ms, student.student_int8_top1, student.model_bytes))
    return points


def versions() -> dict[str, str]:
    import ai_edge_litert
    import openvino

    found = {
        "tillsight": tillsight.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "openvino": openvino.__version__,
    }
    found["ai-edge-litert"] = getattr(ai_edge_litert, "__version__", "?")
    try:
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return found


if __name__ == "__main__":
    main()
