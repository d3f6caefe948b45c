"""The ``tillsight`` command line: one argument builder per command, and the argument types."""

from __future__ import annotations

import argparse
from typing import Any

from . import __version__
from . import cli_values as values
from .cli_convert_args import add_convert_commands
from .cli_fleet import add_fleet, add_run_fleet_flags
from .pipelines import CheckoutOptions

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
    add_convert_commands(commands)
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
