"""The ``tillsight`` command: argument parsing and exit codes only.

Every command is one call into the public API, so a kiosk app can do all the CLI does.
Exit codes: 0 success, 1 failure (one-line message; traceback with ``--debug``), 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from . import benchmarking, demo, report, signing, validation
from .bundle import read_bundle
from .bundle_summary import summary_lines
from .classifier import load
from .cli_convert import convert_command, distill_command, tune_command
from .cli_fleet import fleet_command, fleet_options, run_with_fleet
from .cli_parser import CHECKOUT_FLAGS, build_parser
from .datasets import read_image, why_unreadable
from .errors import OptionsError, TillsightError
from .kiosk import Kiosk, KioskOptions
from .pipelines import (
    CaptureOptions,
    CheckoutOptions,
    JsonLines,
    PipelineOptions,
    ProductRecognized,
)
from .pipelines.events import Event
from .pipelines.lanes import parse_lane, read_lanes_file
from .pipelines.sinks import Sink
from .profiles import list_profiles

__all__ = ["main", "build_parser"]

logger = logging.getLogger("tillsight.cli")


def _describe(event: Event) -> str:
    lane = f"lane {event.lane}  " if event.lane else ""
    if isinstance(event, ProductRecognized):
        return (
            f"{lane}{event.last_seen:7.1f} s  {event.label}  (score {event.score:.2f}, {event.frames} frames, "
            f"on the tray since {event.first_seen:.1f} s)"
        )
    candidates = ", ".join(f"{label} x{votes}" for label, votes in event.candidates) or "none"
    return f"{lane}{event.last_seen:7.1f} s  unknown product, for staff review  (on the tray since {event.first_seen:.1f} s; votes: {candidates})"


def _checkout_options(args: argparse.Namespace, **extra: Any) -> CheckoutOptions:
    return CheckoutOptions(roi=args.roi, **{name: getattr(args, name) for name in CHECKOUT_FLAGS}, **extra)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    if not args.debug:  # source state changes and the periodic metrics line go to stderr
        logging.getLogger("tillsight.pipelines").setLevel(logging.INFO)
    if threading.current_thread() is threading.main_thread():  # a service manager's stop ends the run as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    lanes = tuple(parse_lane(text) for text in args.lane) + tuple(read_lanes_file(args.lanes) if args.lanes else [])
    paced = args.realtime or args.speed is not None
    options = KioskOptions(
        args.bundle,
        source=args.source,
        lanes=lanes,
        pipeline=PipelineOptions(
            checkout=_checkout_options(args, background_label=args.background_label),
            capture=CaptureOptions(
                pace=paced, speed=1.0 if args.speed is None else args.speed, drop_frames=True if paced else None
            ),
            metrics_interval=args.metrics_interval,
            max_frames=args.max_frames,
        ),
        fps=args.fps,
        loop=args.loop,
        photos=args.photos,
        tray_reference=Path(args.tray_reference) if args.tray_reference else None,
        threads=args.threads,
        device=args.device,
        trusted_keys=tuple(args.trusted_key) if args.trusted_key is not None else None,
        version=args.bundle_version,
        jsonl=Path(args.jsonl) if args.jsonl else None,
        mqtt=_mqtt_options(args) if args.mqtt else None,
        mqtt_drain_timeout=args.mqtt_drain_timeout,
    )
    shown: Sink = _print_event if args.jsonl else JsonLines(sys.stdout)  # readable lines beside a file, else JSON on stdout
    fleet = fleet_options(args)
    result = run_with_fleet(options, fleet, [shown]) if fleet is not None else Kiosk(options, sinks=[shown]).run()
    for lane, (items, unknown) in result.baskets.items():
        print(f"{f'lane {lane} ' if lane else ''}basket: {_basket_text(items, unknown)}", file=sys.stderr)
    for lane, metrics in result.metrics.items():
        print(f"{f'lane {lane} ' if lane else ''}pipeline: {metrics.summary()}", file=sys.stderr)
    if result.failure is not None:
        print(f"error: {result.failure}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _mqtt_options(args: argparse.Namespace) -> Any:
    from .pipelines.mqtt import MqttOptions

    return MqttOptions.from_url(
        args.mqtt,
        username=args.mqtt_user,
        password=os.environ.get("TILLSIGHT_MQTT_PASSWORD") or None,
        ca_file=args.mqtt_ca,
        outbox=Path(args.mqtt_outbox) if args.mqtt_outbox else None,
    )


def _basket_text(items: dict[str, int], unknown: int) -> str:
    parts = [f"{count} x {label}" for label, count in items.items()]
    if unknown:
        parts.append(f"{unknown} x unknown (staff review)")
    return ", ".join(parts) or "empty"


def _print_event(event: Event) -> None:
    print(_describe(event), flush=True)


def _demo(args: argparse.Namespace) -> int:
    script = demo.demo_script()
    if args.video:
        print(f"tillsight demo: video {args.video} (not the shipped one), tray {args.roi or 'the whole frame'}")
    else:
        print(f"tillsight demo: {script.frames} frames of a checkout camera at {script.fps} fps, tray {list(script.roi)}")
    if args.bundle:
        print(f"products recognized by the bundle {args.bundle}:")
    else:
        print(f"products recognized by the int8 demo classifier ({script.credit}):")
    with JsonLines(args.jsonl) if args.jsonl else contextlib.nullcontext() as jsonl:
        sinks = [_print_event] + ([jsonl] if jsonl else [])
        result = demo.run_demo(video=args.video, bundle=args.bundle, roi=args.roi, sinks=sinks, threads=args.threads)
    print(f"basket: {_basket_text(result.basket, result.unknown_items)}")
    print(f"pipeline: {result.metrics.summary()}")
    if result.matches is None:
        replaced = " and ".join(name for name, given in (("video", args.video), ("classifier", args.bundle)) if given)
        print(f"no basket check: the script describes the shipped video and classifier, and the {replaced} was replaced")
        return 0
    if result.matches:
        print("the basket matches the video's script")
        return 0
    print(f"error: the basket differs from the video's script: {_basket_text(result.expected_basket or {}, 0)}", file=sys.stderr)
    return 1


def _report(args: argparse.Namespace) -> int:
    summaries = [report.summarize_bundle(path) for path in args.bundles]
    if args.benchmark:
        summaries = report.with_device_latency(summaries, [benchmarking.read_benchmark(path) for path in args.benchmark])
    table = report.markdown_table(summaries)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(table, encoding="utf-8")
    print(table, end="")
    points = [(s.name, s.latency_p50_ms, s.converted_top1, s.model_bytes) for s in summaries]
    png = report.plot_accuracy_latency(points, out / "report.png")
    if png is None:  # no accuracy measured (converted without --eval): the table still stands
        print(f"\nwrote {out / 'report.md'}; no plot: no bundle has both an accuracy and a latency measurement")
    else:
        print(f"\nwrote {out / 'report.md'} and {png}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    max_memory = None if args.max_memory_mb is None else int(args.max_memory_mb * 1e6)
    with contextlib.ExitStack() as stack:
        bundles = args.bundles
        if not bundles:  # a bundle sent as a tar on stdin, to be measured here
            if sys.stdin.isatty():
                raise OptionsError(
                    "benchmark needs BUNDLE folders, or one bundle as a tar on standard input (tar -C out -c raspberry-pi-4 | tillsight benchmark)"
                )
            unpacked = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tillsight-benchmark-")))
            bundles = [benchmarking.bundle_from_tar(sys.stdin.buffer, unpacked)]
        results = benchmarking.benchmark(
            bundles,
            args.frames,
            args.threads,
            args.source,
            max_latency_ms=args.max_latency_ms,
            max_memory_bytes=max_memory,
            launcher=shlex.split(args.launcher or ""),
        )
    if not args.bundles:  # name it as sent, not by the temporary folder it was measured in
        results = dataclasses.replace(
            results,
            results=tuple(
                dataclasses.replace(result, bundle=f"<stdin>/{Path(result.bundle).name}") for result in results.results
            ),
        )
    table_out = sys.stderr if args.json == "-" else sys.stdout
    print(benchmarking.format_table(results), file=table_out)
    if args.json == "-":
        print(json.dumps(results.to_dict(), indent=2))
    elif args.json:
        benchmarking.write_benchmark(results, args.json)
        print(f"wrote {args.json}", file=table_out)
    benchmarking.raise_over_budget(results)
    return 0


def _val(args: argparse.Namespace) -> int:
    result = validation.validate(args.bundle, args.data, args.labels, progress=not args.quiet)
    markdown, picture = validation.write_report(result, args.out)
    print(result.markdown(), end="")
    written = [str(markdown)] + ([str(picture)] if picture else []) + ([args.json] if args.json else [])
    if args.json:
        validation.write_json(result, args.json)
    print(f"\nwrote {', '.join(written)}")
    return 0


def _edgetpu_check(args: argparse.Namespace) -> int:
    from .converters.edgetpu_preflight import check  # no TensorFlow: the flatbuffer is read directly

    report = check(args.model)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(report.summary())
    for verdict in report.ops[report.ops_on_tpu :]:
        where = "cannot map" if not verdict.maps else "after the split"
        print(f"  op {verdict.index:>3} {verdict.op:<24} CPU ({where}{': ' + verdict.reason if verdict.reason else ''})")
    return 0


def _compile_edgetpu(args: argparse.Namespace) -> int:
    from .converters.edgetpu_compiler import compile_bundle  # no TensorFlow

    bundle = compile_bundle(args.bundle)
    compiled = bundle.manifest.target_report["edgetpu_compiler"]
    print(
        f"bundle: {bundle.path}: model_edgetpu.tflite, {compiled.get('ops_on_tpu')}/{compiled.get('ops_total')} ops "
        f"on the Edge TPU, {compiled.get('subgraphs')} subgraph(s)"
    )
    return 0


def _profiles(_args: argparse.Namespace) -> int:
    for profile in list_profiles():
        fallbacks = profile.backend_fallbacks
        fallback = f" (fallback: {', '.join(b.value for b in fallbacks)})" if fallbacks else ""
        print(f"{profile.name:<20} {profile.backend.value:<9} {profile.description}{fallback}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    """Exit 1 when loading with the configured trusted keys would refuse the bundle."""
    bundle = read_bundle(args.bundle)  # every file matches the manifest's sha256, or BundleError
    keys = args.trusted_key if args.trusted_key is not None else signing.trusted_keys_from_environment()
    status = signing.signature_status(bundle.path, signing.load_trusted_keys(keys) if keys else ())
    if args.json:
        print(json.dumps(bundle.manifest.to_dict(), indent=2))
        return 1 if status.refused else 0
    print(f"bundle: {bundle.path} (files match the manifest)")
    print(f"signature: {status.detail}")
    print("\n".join(summary_lines(bundle.manifest)))
    accuracy = bundle.manifest.metrics.accuracy
    if accuracy is not None and accuracy.within_tolerance is False:
        print(
            f"WARNING: the accuracy check missed its tolerance: drop {accuracy.top1_drop:.2f} points > {accuracy.tolerance:g} "
            "(converted with --allow-accuracy-drop)"
        )
    if status.refused:
        print(f"error: loading refuses this bundle: {status.detail}", file=sys.stderr)
    return 1 if status.refused else 0


def _classify(args: argparse.Namespace) -> int:
    failures = 0
    with load(args.bundle, threads=args.threads, trusted_keys=args.trusted_key) as classifier:
        for name in args.images:
            image = read_image(Path(name))
            if image is None:
                print(f"error: {name} {why_unreadable(Path(name))}", file=sys.stderr)
                failures += 1
                continue
            predictions = classifier.classify(image, top_k=args.top_k)
            if args.json:
                print(json.dumps({"image": name, "predictions": [p.__dict__ for p in predictions]}))
            else:
                print(f"{name}: " + ", ".join(f"{p.label} {p.score:.3f}" for p in predictions))
    return 1 if failures else 0


def _keygen(args: argparse.Namespace) -> int:
    identifier = signing.generate_keys(f"{args.name}.pem", f"{args.name}.pub.pem")
    print(f"key {identifier}: private {args.name}.pem (keep it secret), public {args.name}.pub.pem (give it to the kiosks)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    read_bundle(args.bundle)  # only a bundle whose files match its manifest is worth signing
    identifier = signing.sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle} with key {identifier}")
    return 0


_COMMANDS = {
    "convert": convert_command,
    "distill": distill_command,
    "profiles": _profiles,
    "inspect": _inspect,
    "classify": _classify,
    "edgetpu-check": _edgetpu_check,
    "compile-edgetpu": _compile_edgetpu,
    "run": _run,
    "tune": tune_command,
    "keygen": _keygen,
    "sign": _sign,
    "demo": _demo,
    "report": _report,
    "benchmark": _benchmark,
    "val": _val,
    "fleet": fleet_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    if not args.debug:  # OpenCV's and FFmpeg's own lines (a missing camera, a broken video): the CLI says it, once
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg is first used
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
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)".splitlines()[0], file=sys.stderr
        )
        return 1
