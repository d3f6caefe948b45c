"""The ``tillsight`` command line: one argument builder per command, and the argument types."""

from __future__ import annotations

import argparse
from typing import Any

from . import __version__
from . import cli_values as values
from .cli_fleet import add_fleet, add_run_fleet_flags
from .pipelines import CheckoutOptions
from .preprocess import ColorOrder
from .profiles import DistillationOptions

__all__ = ["CHECKOUT_FLAGS", "build_parser"]


# Every threshold of CheckoutOptions is a flag of `tillsight run` (roi and background_label have their own).
CHECKOUT_FLAGS = {
    "min_score": "score a frame needs to vote",
    "window": "frames the vote looks at (M)",
    "min_votes": "votes a label needs in the window (N, a majority of M)",
    "unknown_after": "seconds on the tray without a majority before an unknown_product event",
    "background_frames": "frames that learn the empty tray at start",
    "change_threshold": "pixel difference (0-255) from the empty tray that counts as a change",
    "occupied_fraction": "share of the tray that must change for it to count as occupied",
    "enter_frames": "consecutive occupied frames that start an item presence",
    "leave_frames": "consecutive empty frames that end it",
    "background_adapt": "how fast the empty-tray reference follows lighting drift (0-1)",
}


def _add_checkout_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--roi", type=values.roi, help="tray region x,y,width,height in pixels (default: whole frame)")
    command.add_argument("--jsonl", help="append events as JSON lines to this file")
    command.add_argument("--threads", type=values.count(1), help="CPU threads (default: the profile's)")
    defaults = CheckoutOptions()
    for name, text in CHECKOUT_FLAGS.items():
        default = getattr(defaults, name)
        command.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default, help=f"{text} (default {default})"
        )


class _Parser(argparse.ArgumentParser):
    """The ``tillsight`` parser: a dash-led range given as a separate word gets its two spellings in the error."""

    def error(self, message: str) -> Any:
        if "--input-range: expected one argument" in message:
            message += " (write --input-range=-1-1, or --input-range symmetric)"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tillsight`` command."""
    parser = _Parser(prog="tillsight", description="Edge deployment of Keras product classifiers.")
    parser.add_argument("--version", action="version", version=f"tillsight {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(commands)
    _add_distill(commands)
    _add_tune(commands)
    _add_profiles(commands)
    _add_inspect(commands)
    _add_classify(commands)
    _add_edgetpu_check(commands)
    _add_compile_edgetpu(commands)
    _add_run(commands)
    _add_report(commands)
    _add_benchmark(commands)
    _add_val(commands)
    _add_demo(commands)
    _add_keys(commands)
    add_fleet(commands)
    return parser


def _add_convert(commands: Any) -> None:
    conv = commands.add_parser("convert", help="convert a Keras classifier into a bundle for a device profile")
    conv.add_argument("model", help=".keras / .h5 file or SavedModel directory")
    conv.add_argument("--profile", required=True, help="profile name (see 'tillsight profiles') or a .toml file")
    conv.add_argument(
        "--calibration",
        help="class folder or list file of representative images (needed by every int8 profile; "
        "an OpenVINO FP16 profile quantizes nothing)",
    )
    conv.add_argument("--eval", dest="evaluation", help="labeled class folder or list file for the accuracy check")
    conv.add_argument("--labels", help="labels file: one label a line, in output-index order")
    conv.add_argument("--out", required=True, help="output folder; the bundle goes to OUT/<profile>/")
    _add_input_options(conv)
    conv.add_argument("--allow-accuracy-drop", action="store_true", help="write the bundle even beyond the tolerance")
    conv.add_argument(
        "--min-calibration",
        type=values.count(1),
        metavar="N",
        help="accept as few as N usable calibration images (default: the profile's, 100 for the shipped int8 profiles)",
    )
    conv.add_argument("--unsafe-load", action="store_true", help="load a trusted model file with Keras safe mode off")
    conv.add_argument(
        "--prune",
        metavar="MODE:FRACTION",
        help="prune before quantizing: channels:0.3 (filters removed), unstructured:0.5 (sparsity), a bare "
        "fraction (the profile's mode) or none; default: the profile's [pruning]",
    )
    conv.add_argument(
        "--finetune",
        metavar="DATA",
        help="photos to fine-tune on after pruning and for --qat: class folder or list file (or unlabeled frames with --distill)",
    )
    conv.add_argument(
        "--finetune-epochs", type=values.count(0), metavar="N", help="fine-tuning epochs after pruning (0: one shot)"
    )
    conv.add_argument(
        "--distill", action="store_true", help="fine-tuning after pruning also learns from the original float model"
    )
    conv.add_argument(
        "--qat",
        action="store_true",
        help="quantization-aware fine-tuning before the int8 conversion (TFLite and Edge TPU profiles; needs --finetune)",
    )
    conv.add_argument(
        "--qat-epochs", type=values.count(1), metavar="N", help="quantization-aware fine-tuning epochs (with --qat)"
    )
    conv.add_argument(
        "--seed",
        type=values.count(0),
        default=0,
        metavar="N",
        help="random seed of the fine-tuning steps (recorded in the manifest; the same seed and data give the same model)",
    )
    conv.add_argument(
        "--sign-key",
        metavar="PEM",
        help="sign the bundle with this Ed25519 private key (see 'tillsight keygen') as it is written",
    )
    conv.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_tune(commands: Any) -> None:
    tune = commands.add_parser(
        "tune",
        help="find the most accurate bundle that meets a profile's budget: int8, QAT, pruning, students, measured",
    )
    tune.add_argument("model", help=".keras / .h5 file or SavedModel directory")
    tune.add_argument("--profile", required=True, help="profile name (see 'tillsight profiles') or a .toml file")
    tune.add_argument("--calibration", required=True, help="class folder or list file of representative images")
    tune.add_argument("--eval", dest="evaluation", required=True, help="labeled photos every candidate's top-1 is measured on")
    tune.add_argument(
        "--finetune", required=True, metavar="DATA", help="labeled photos for QAT, pruning's fine-tuning and the students"
    )
    tune.add_argument("--labels", help="labels file: one label a line, in output-index order")
    tune.add_argument("--out", required=True, help="folder for candidates/, tune.md, tune.png and the winner OUT/<profile>/")
    tune.add_argument("--max-latency-ms", type=values.positive, help="latency budget, classify() p50 (default: the profile's)")
    tune.add_argument(
        "--max-drop", type=float, metavar="POINTS", help="top-1 points the bundle may lose (default: the profile's max_top1_drop)"
    )
    tune.add_argument(
        "--time-budget",
        type=values.duration,
        default=45 * 60.0,
        metavar="DURATION",
        help="for the whole search: 45m (default), 2h, 600s",
    )
    tune.add_argument(
        "--bench-command",
        metavar="COMMAND",
        help="measure on the device: a shell command that gets each bundle as a tar on stdin and prints benchmark JSON, "
        'e.g. "ssh kiosk-12 tillsight benchmark --json -" (default: this host)',
    )
    tune.add_argument("--frames", type=values.count(1), default=50, help="timed runs per latency measurement (default 50)")
    tune.add_argument(
        "--epochs",
        type=values.count(1),
        help="epochs of every training candidate (default: the profile's QAT and pruning epochs)",
    )
    tune.add_argument(
        "--explore",
        action="store_true",
        help="keep trying candidates after one fits (time budget allowing) and keep the most accurate that fits",
    )
    _add_input_options(tune)
    tune.add_argument("--unsafe-load", action="store_true", help="load a trusted model file with Keras safe mode off")
    tune.add_argument("--sign-key", metavar="PEM", help="sign the candidates and the winner with this Ed25519 private key")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_distill(commands: Any) -> None:
    dist = commands.add_parser("distill", help="train a smaller student from a Keras classifier (the teacher)")
    dist.add_argument("teacher", help="the teacher: .keras / .h5 file")
    dist.add_argument(
        "--student",
        required=True,
        help="efficientnet-lite0|1|2 (ImageNet-pretrained), mobilenetv2-0.35, mobilenetv3-small, "
        "mobilenetv3-small-minimal (from scratch), or a .keras file with the teacher's input and outputs",
    )
    dist.add_argument(
        "--student-size", type=values.size, metavar="HxW", help="the student's input size, e.g. 160 (default: the teacher's)"
    )
    dist.add_argument("--data", help="labeled class folder or list file")
    dist.add_argument("--unlabeled", metavar="FOLDER", help="folder of unlabeled photos (store frames): the teacher labels them")
    dist.add_argument("--epochs", type=values.count(1), default=10, help="passes over the photos (default 10)")
    dist.add_argument(
        "--learning-rate",
        type=float,
        default=0.001,
        help="Adam's starting rate (default 0.001; pretrained students' backbones train at 1/10, students started from the teacher at 1/100)",
    )
    dist.add_argument("--alpha", type=float, help=f"weight of the label loss (default {DistillationOptions.alpha})")
    dist.add_argument("--temperature", type=float, help=f"softening of the outputs (default {DistillationOptions.temperature:g})")
    dist.add_argument("--eval", dest="evaluation", help="labeled photos to compare teacher and student on")
    dist.add_argument("--labels", help="labels file: one label a line, in output-index order")
    dist.add_argument("--out", required=True, help="the student .keras file to write")
    _add_input_options(dist)
    dist.add_argument("--unsafe-load", action="store_true", help="load trusted model files with Keras safe mode off")
    dist.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_profiles(commands: Any) -> None:
    commands.add_parser("profiles", help="list the shipped device profiles")


def _add_inspect(commands: Any) -> None:
    inspect = commands.add_parser("inspect", help="show what a bundle holds and how it was measured")
    inspect.add_argument("bundle")
    inspect.add_argument("--json", action="store_true", help="print the whole manifest")
    _add_trusted_key(inspect)


def _add_classify(commands: Any) -> None:
    classify = commands.add_parser("classify", help="classify image files with a bundle")
    classify.add_argument("bundle")
    classify.add_argument("images", nargs="+")
    classify.add_argument(
        "--top-k", type=values.count(1), default=3, help="how many labels to print per image, best first (default: 3)"
    )
    classify.add_argument("--threads", type=values.count(1), help="CPU threads (default: the profile's)")
    classify.add_argument("--json", action="store_true", help="one JSON object per image")
    _add_trusted_key(classify)


def _add_trusted_key(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--trusted-key",
        action="append",
        metavar="PEM",
        help="refuse the bundle unless signed by this public key (repeatable; default: the files $TILLSIGHT_TRUSTED_KEYS names)",
    )


def _add_keys(commands: Any) -> None:
    keygen = commands.add_parser(
        "keygen", help="make an Ed25519 key pair for signing bundles (PKCS#8 + SubjectPublicKeyInfo PEM)"
    )
    keygen.add_argument(
        "name", help="writes NAME.pem (private, mode 0600; encrypted when $TILLSIGHT_KEY_PASSWORD is set) and NAME.pub.pem"
    )
    sign = commands.add_parser(
        "sign", help="sign a bundle with an Ed25519 private key: writes signature.json beside its manifest"
    )
    sign.add_argument("bundle")
    sign.add_argument(
        "--key", required=True, metavar="PEM", help="the private key (PKCS#8 PEM; encrypted ones with $TILLSIGHT_KEY_PASSWORD)"
    )


def _add_edgetpu_check(commands: Any) -> None:
    check = commands.add_parser("edgetpu-check", help="which ops of a model can run on the Coral Edge TPU")
    check.add_argument("model", help="a .tflite file or a bundle directory")
    check.add_argument("--json", action="store_true", help="the whole report, per op")


def _add_compile_edgetpu(commands: Any) -> None:
    compile_ = commands.add_parser("compile-edgetpu", help="compile an Edge TPU bundle with edgetpu_compiler")
    compile_.add_argument("bundle")


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="run the checkout pipeline on a camera, stream, video or image folder")
    run.add_argument("bundle")
    run.add_argument("--source", help="camera index (0), rtsp://... or http://... URL, video file or folder")
    run.add_argument(
        "--lane",
        action="append",
        default=[],
        metavar="ID:SOURCE[:X,Y,W,H]",
        help="a lane of a multi-lane kiosk, with its source and tray region (repeat per lane; instead of --source)",
    )
    run.add_argument("--lanes", metavar="TOML", help="the lanes from a file of [[lane]] tables with id, source and roi")
    _add_checkout_arguments(run)
    run.add_argument("--device", help="accelerator device overriding the profile's (GPU.1, usb, pci:0...)")
    run.add_argument("--fps", type=values.positive, help="frame rate of an image folder (or of a video that does not say)")
    run.add_argument("--background-label", help="model class meaning 'empty tray' (instead of the frame difference)")
    run.add_argument("--tray-reference", help="picture of the empty tray region (default: learned from the first frames)")
    run.add_argument("--realtime", action="store_true", help="play recorded sources at their frame rate, dropping late frames")
    run.add_argument(
        "--speed",
        type=values.positive,
        metavar="X",
        help="play recorded sources X times faster than recorded (implies --realtime)",
    )
    run.add_argument(
        "--metrics-interval", type=values.non_negative, default=30.0, help="seconds between metrics log lines (0: off)"
    )
    run.add_argument("--max-frames", type=values.count(1), help="stop after this many frames")
    run.add_argument("--loop", action="store_true", help="play a video file again and again (demos, soak runs)")
    run.add_argument(
        "--photos",
        action="store_true",
        help="the --source folder holds photos of one item each (any size): classify every photo as its own item",
    )
    _add_trusted_key(run)
    add_run_fleet_flags(run)
    mqtt = run.add_argument_group('MQTT (pip install "tillsight[mqtt]")')
    mqtt.add_argument(
        "--mqtt",
        metavar="URL",
        help="also publish events (QoS 1, through a durable outbox) to mqtt[s]://[USER@]HOST[:PORT]/TOPIC; "
        "the password comes from $TILLSIGHT_MQTT_PASSWORD",
    )
    mqtt.add_argument("--mqtt-user", help="MQTT user name (instead of USER@ in the URL)")
    mqtt.add_argument("--mqtt-ca", metavar="PEM", help="certificate authorities to trust for mqtts:// (default: the system's)")
    mqtt.add_argument(
        "--mqtt-outbox", metavar="FILE", help="the outbox file (default: $XDG_STATE_HOME/tillsight/mqtt-outbox.sqlite)"
    )
    mqtt.add_argument(
        "--mqtt-drain-timeout",
        type=values.non_negative,
        default=10.0,
        metavar="S",
        help="seconds to wait at the end for the broker to take what the outbox holds (default 10; the rest waits for the next run)",
    )


def _add_report(commands: Any) -> None:
    report_ = commands.add_parser("report", help="compare bundles: markdown table and accuracy-vs-latency plot")
    report_.add_argument("bundles", nargs="+")
    report_.add_argument(
        "--out", required=True, help="folder for report.md and report.png (created; files there of those names are replaced)"
    )
    report_.add_argument(
        "--benchmark",
        nargs="+",
        default=[],
        metavar="JSON",
        help="'tillsight benchmark --json' files: their device latency replaces the conversion host's, labelled with the device",
    )


def _add_val(commands: Any) -> None:
    val = commands.add_parser("val", help="accuracy of a bundle on labeled photos: top-1/5, recall per product, confusions")
    val.add_argument("bundle")
    val.add_argument("data", help="labeled photos: class folder or list file")
    val.add_argument("--labels", help="labels file, when the data's classes are named otherwise than the bundle's labels")
    val.add_argument("--out", default="tillsight-val", help="folder for val.md and confusion.png (default: tillsight-val)")
    val.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    val.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_benchmark(commands: Any) -> None:
    bench = commands.add_parser(
        "benchmark",
        help="measure bundles on this machine: cold start, latency p50/p95/p99, peak memory, budgets",
    )
    bench.add_argument(
        "bundles",
        nargs="*",
        metavar="BUNDLE",
        help="bundle folders; none: one bundle as a tar on standard input (tar -C out -c raspberry-pi-4 | ssh kiosk tillsight benchmark --json -)",
    )
    bench.add_argument("--frames", type=values.count(1), default=100, help="timed runs per measurement (default: 100)")
    bench.add_argument("--threads", type=values.count(1), help="CPU threads (default: the profile's)")
    bench.add_argument("--source", metavar="IMAGE|VIDEO", help="what to classify (default: a synthetic 1280x720 frame)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-': to stdout, the table to stderr)")
    bench.add_argument(
        "--max-latency-ms", type=values.positive, help="latency budget for the classify() p50 (default: the profile's)"
    )
    bench.add_argument("--max-memory-mb", type=values.positive, help="peak RSS budget in MB (default: the profile's)")
    bench.add_argument(
        "--launcher",
        metavar="COMMAND",
        help="run each measuring process under this command, e.g. 'taskset -c 2' (one core)",
    )


def _add_demo(commands: Any) -> None:
    demo_ = commands.add_parser("demo", help="run the shipped checkout video through the pipeline and print the basket")
    demo_.add_argument("--video", help="another video instead of the shipped one")
    demo_.add_argument("--bundle", help="another bundle instead of the shipped classifier")
    demo_.add_argument("--roi", type=values.roi, help="tray region x,y,width,height (default: the shipped video's)")
    demo_.add_argument("--jsonl", help="also append the events as JSON lines to this file")
    demo_.add_argument("--threads", type=values.count(1), help="CPU threads")


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--color-order", choices=[c.value for c in ColorOrder], default="rgb", help="model's channel order")
    parser.add_argument(
        "--input-range",
        type=values.input_range,
        default="0-255",
        metavar="RANGE",
        help="value range the model expects: pixels (0-255, the default), unit (0-1) or symmetric (-1-1; also --input-range=-1-1)",
    )
    parser.add_argument("--mean", type=values.triple, help="per-channel mean in 0-255 units (overrides --input-range)")
    parser.add_argument("--std", type=values.triple, help="per-channel std in 0-255 units (with --mean)")
    parser.add_argument(
        "--crop",
        type=float,
        help="central fraction of each frame side the model was trained on, e.g. 0.875 "
        "(default: the profile's input.crop, 1.0 in the shipped profiles)",
    )
