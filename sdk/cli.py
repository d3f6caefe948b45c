"""The ``tillsight`` command: argument parsing and exit codes only.

Every command is one call into the public API, so a kiosk app can do all the CLI does.
Exit codes: 0 success, 1 failure (one-line message; traceback with ``--debug``), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, edgetpu
from .bundle import Manifest, read_bundle
from .classifier import load
from .conversion import ConversionOptions, convert
from .datasets import read_image
from .errors import TillsightError
from .preprocess import ColorOrder, InputRange
from .profiles import list_profiles

__all__ = ["main", "build_parser"]

logger = logging.getLogger("tillsight.cli")


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 123.7,116.3,103.5, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tillsight`` command."""
    parser = argparse.ArgumentParser(prog="tillsight", description="Edge deployment of Keras product classifiers.")
    parser.add_argument("--version", action="version", version=f"tillsight {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = commands.add_parser("convert", help="convert a Keras classifier into a bundle for a device profile")
    conv.add_argument("model", help=".keras / .h5 file or SavedModel directory")
    conv.add_argument("--profile", required=True, help="profile name (see 'tillsight profiles') or a .toml file")
    conv.add_argument("--calibration", required=True, help="class folder or list file of representative images")
    conv.add_argument("--eval", dest="evaluation", help="labeled class folder or list file for the accuracy check")
    conv.add_argument("--labels", help="labels file: one label a line, in output-index order")
    conv.add_argument("--out", required=True, help="output folder; the bundle goes to OUT/<profile>/")
    conv.add_argument("--color-order", choices=[c.value for c in ColorOrder], default="rgb", help="model's channel order")
    conv.add_argument(
        "--input-range", choices=[r.value for r in InputRange], default="0-255", help="value range the model expects"
    )
    conv.add_argument("--mean", type=_triple, help="per-channel mean in 0-255 units (overrides --input-range)")
    conv.add_argument("--std", type=_triple, help="per-channel std in 0-255 units (with --mean)")
    conv.add_argument("--allow-accuracy-drop", action="store_true", help="write the bundle even beyond the tolerance")
    conv.add_argument("--unsafe-load", action="store_true", help="load a trusted model file with Keras safe mode off")
    conv.add_argument("--quiet", action="store_true", help="no progress bars")

    commands.add_parser("profiles", help="list the shipped device profiles")

    inspect = commands.add_parser("inspect", help="show what a bundle holds and how it was measured")
    inspect.add_argument("bundle")
    inspect.add_argument("--json", action="store_true", help="print the whole manifest")

    classify = commands.add_parser("classify", help="classify image files with a bundle")
    classify.add_argument("bundle")
    classify.add_argument("images", nargs="+")
    classify.add_argument("--top-k", type=int, default=3)
    classify.add_argument("--threads", type=int, help="CPU threads (default: the profile's)")
    classify.add_argument("--json", action="store_true", help="one JSON object per image")
    check = commands.add_parser("edgetpu-check", help="which ops of a model can run on the Coral Edge TPU")
    check.add_argument("model", help="a .tflite file or a bundle directory")
    check.add_argument("--json", action="store_true", help="the whole report, per op")

    compile_ = commands.add_parser("compile-edgetpu", help="compile an Edge TPU bundle with edgetpu_compiler")
    compile_.add_argument("bundle")
    return parser


def _edgetpu_check(args: argparse.Namespace) -> int:
    report = edgetpu.check(args.model)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(report.summary())
    for verdict in report.ops[report.ops_on_tpu :]:
        where = "cannot map" if not verdict.maps else "after the split"
        print(f"  op {verdict.index:>3} {verdict.op:<24} CPU ({where}{': ' + verdict.reason if verdict.reason else ''})")
    return 0


def _compile_edgetpu(args: argparse.Namespace) -> int:
    bundle = edgetpu.compile_bundle(args.bundle)
    compiled = bundle.manifest.target_report["edgetpu_compiler"]
    print(
        f"bundle: {bundle.path}: model_edgetpu.tflite, {compiled.get('ops_on_tpu')}/{compiled.get('ops_total')} ops "
        f"on the Edge TPU, {compiled.get('subgraphs')} subgraph(s)"
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    if (args.mean is None) != (args.std is None):
        raise TillsightError("--mean and --std go together: give both")
    common = dict(
        color_order=ColorOrder(args.color_order),
        allow_accuracy_drop=args.allow_accuracy_drop,
        allow_unsafe_model=args.unsafe_load,
        progress=not args.quiet,
    )
    try:
        if args.mean is not None:
            options = ConversionOptions(mean=args.mean, std=args.std, **common)
        else:
            options = ConversionOptions.from_input_range(args.input_range, **common)
    except ValueError as exc:
        raise TillsightError(f"bad input options: {exc}") from exc
    bundle = convert(
        args.model,
        args.profile,
        calibration=args.calibration,
        out=args.out,
        evaluation=args.evaluation,
        labels=args.labels,
        options=options,
    )
    print(f"bundle: {bundle.path}")
    _print_summary(bundle.manifest)
    return 0


def _print_summary(manifest: Manifest) -> None:
    spec = manifest.input
    metrics = manifest.metrics
    print(f"profile: {manifest.profile_name} ({manifest.runtime.backend.value}, {manifest.runtime.threads} threads)")
    print(f"classes: {len(manifest.labels)}  input: {spec.height}x{spec.width} {spec.dtype} {spec.color_order.value}, {spec.resize.value}")
    print(f"model: {manifest.runtime.model_file} ({metrics.get('model_bytes', 0) / 1e6:.2f} MB), source sha256 {manifest.source_model.get('sha256', '?')[:12]}")
    accuracy = metrics.get("accuracy")
    if accuracy:
        print(
            f"accuracy on {accuracy['images']} images: float {accuracy['float_top1']:.2f}%, "
            f"converted {accuracy['converted_top1']:.2f}%, drop {accuracy['top1_drop']:.2f} points "
            f"(tolerance {accuracy.get('tolerance', '?')}), agreement {accuracy['top1_agreement']:.2f}%"
        )
    latency = metrics.get("latency_host")
    if latency:
        print(f"latency on this host: p50 {latency['p50_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms ({latency['engine']})")


def _profiles(_args: argparse.Namespace) -> int:
    for profile in list_profiles():
        fallback = f" (fallback: {', '.join(b.value for b in profile.fallbacks)})" if profile.fallbacks else ""
        print(f"{profile.name:<20} {profile.backend.value:<9} {profile.description}{fallback}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    bundle = read_bundle(args.bundle)
    if args.json:
        print(json.dumps(bundle.manifest.to_dict(), indent=2))
        return 0
    print(f"bundle: {bundle.path} (verified)")
    _print_summary(bundle.manifest)
    return 0


def _classify(args: argparse.Namespace) -> int:
    failures = 0
    with load(args.bundle, threads=args.threads) as classifier:
        for name in args.images:
            image = read_image(Path(name))
            if image is None:
                print(f"error: {name} is not a readable image", file=sys.stderr)
                failures += 1
                continue
            predictions = classifier.classify(image, top_k=args.top_k)
            if args.json:
                print(json.dumps({"image": name, "predictions": [p.__dict__ for p in predictions]}))
            else:
                print(f"{name}: " + ", ".join(f"{p.label} {p.score:.3f}" for p in predictions))
    return 1 if failures else 0


_COMMANDS = {
    "convert": _convert,
    "profiles": _profiles,
    "inspect": _inspect,
    "classify": _classify,
    "edgetpu-check": _edgetpu_check,
    "compile-edgetpu": _compile_edgetpu,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _COMMANDS[args.command](args)
    except TillsightError as exc:
        if args.debug:
            logger.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unforeseen library error: still one line without --debug
        if args.debug:
            logger.exception("unexpected failure")
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)".splitlines()[0], file=sys.stderr)
        return 1
