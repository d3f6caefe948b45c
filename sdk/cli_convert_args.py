"""The arguments of the converting side's commands (``convert``, ``distill``, ``tune``); their handlers are in
:mod:`.cli_convert`, which imports the converting side when a command runs."""

from __future__ import annotations

import argparse
from typing import Any

from . import cli_values as values
from .preprocess import ColorOrder
from .profiles import DistillationOptions

__all__ = ["add_convert_commands"]


def add_convert_commands(commands: Any) -> None:
    """The ``convert``, ``distill`` and ``tune`` subcommands."""
    _add_convert(commands)
    _add_distill(commands)
    _add_tune(commands)


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
        "--finetune-epochs",
        type=values.count(0),
        metavar="N",
        help="fine-tuning epochs after pruning (0: one shot; default: none for unstructured, 8 for channels up to 0.3 "
        "and 4 more for each further tenth)",
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
    _add_seed(conv, "of the fine-tuning steps (recorded in the manifest; the same seed and data give the same model)")
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
        help="epochs of every training candidate (default: the profile's QAT and pruning epochs, else each cut's own)",
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
        help="Adam's starting rate (default 0.001; pretrained students' backbones train at 1/10, students started from the teacher at 3/10)",
    )
    dist.add_argument("--alpha", type=float, help=f"weight of the label loss (default {DistillationOptions.alpha})")
    dist.add_argument("--temperature", type=float, help=f"softening of the outputs (default {DistillationOptions.temperature:g})")
    dist.add_argument("--eval", dest="evaluation", help="labeled photos to compare teacher and student on")
    dist.add_argument("--labels", help="labels file: one label a line, in output-index order")
    dist.add_argument("--out", required=True, help="the student .keras file to write")
    _add_seed(dist, "of the new layers, the batches and the views (the same seed and photos give the same student)")
    _add_input_options(dist)
    dist.add_argument("--unsafe-load", action="store_true", help="load trusted model files with Keras safe mode off")
    dist.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_seed(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--seed", type=values.count(0), default=0, metavar="N", help=f"random seed {what}")


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
