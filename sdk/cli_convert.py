"""The converting side's commands (``convert``, ``tune``, ``distill``): parsing results into options, one call, exit codes.

Their arguments are in :mod:`.cli_convert_args`, which the parser imports without the converting side."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from . import signing
from .bundle_summary import summary_lines
from .conversion_options import ConversionOptions
from .errors import OptionsError
from .preprocess import ColorOrder
from .profiles import DistillationOptions, load_profile

__all__ = ["convert_command", "distill_command", "tune_command"]


def _input_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ConversionOptions fields from the input flags (--mean and --std, else --input-range), safe loading, progress."""
    if (args.mean is None) != (args.std is None):
        raise OptionsError("--mean and --std go together: give both")
    fields = dict(
        color_order=ColorOrder(args.color_order), crop=args.crop, allow_unsafe_model=args.unsafe_load, progress=not args.quiet
    )
    if args.mean is not None:
        return {**fields, "mean": args.mean, "std": args.std, "input_range": None}
    return {**fields, "input_range": args.input_range}


def convert_command(args: argparse.Namespace) -> int:
    options = ConversionOptions.for_profile(
        args.profile,
        prune=args.prune,
        finetune_epochs=args.finetune_epochs,
        distill=args.distill,
        qat=args.qat,
        qat_epochs=args.qat_epochs,
        allow_accuracy_drop=args.allow_accuracy_drop,
        min_calibration_images=args.min_calibration,
        sign_key=args.sign_key,
        seed=args.seed,
        **_input_options(args),
    )
    from .converters.input_checks import check_conversion_inputs  # no TensorFlow: bad input fails in a second

    profile = options.apply_to(load_profile(args.profile))
    check_conversion_inputs(args.model, profile, args.calibration, args.evaluation, args.labels, args.finetune, args.out)
    if args.sign_key:
        signing.load_private_key(args.sign_key)  # a wrong key fails now, not after the conversion
    from .converters.steps import conversion_step, shown

    with shown(options.progress), conversion_step("load TensorFlow", {}):
        from .converters.conversion import convert  # imports TensorFlow: only when converting

    bundle = convert(
        args.model,
        args.profile,
        calibration=args.calibration,
        out=args.out,
        evaluation=args.evaluation,
        labels=args.labels,
        options=options,
        finetune=args.finetune,
    )
    print(f"bundle: {bundle.path}")
    print("\n".join(summary_lines(bundle.manifest)))
    return 0


def tune_command(args: argparse.Namespace) -> int:
    fields = _input_options(args)
    progress = fields.pop("progress")
    options = ConversionOptions.from_input_range(**fields, sign_key=args.sign_key)
    from tqdm import tqdm

    from .converters.tune import TuneOptions, tune  # imports TensorFlow: only when tuning
    from .converters.tune_report import summary_line

    bar = tqdm(total=6, desc="tune", unit="candidate", disable=not progress, file=sys.stderr)

    def on_result(result: Any, number: int, total: int) -> None:
        bar.total = total
        figures = (
            ""
            if result.top1 is None
            else (
                f": top-1 {result.top1:.2f}% (drop {result.top1_drop:.2f}), p50 {result.latency_ms:.2f} ms, {result.model_bytes / 1e6:.2f} MB, "
                f"{result.seconds:.0f} s"
            )
        )
        tqdm.write(f"[{number}/{total}] {result.candidate.name}{figures} -- {result.verdict}")
        bar.update(1)

    try:
        result = tune(
            args.model,
            args.profile,
            args.calibration,
            args.evaluation,
            args.finetune,
            args.out,
            labels=args.labels,
            options=options,
            search=TuneOptions(
                max_latency_ms=args.max_latency_ms,
                max_top1_drop=args.max_drop,
                time_budget_s=args.time_budget,
                bench_command=args.bench_command,
                frames=args.frames,
                epochs=args.epochs,
                stop_early=not args.explore,
            ),
            on_result=on_result,
        )
    finally:
        bar.close()
    print(f"tune: {summary_line(result)}")
    print(f"wrote {Path(args.out) / 'tune.md'}" + (" and tune.png" if (Path(args.out) / "tune.png").exists() else ""))
    return 0 if result.winner is not None else 1


def distill_command(args: argparse.Namespace) -> int:
    from .converters.distill import distill  # imports TensorFlow: only when distilling

    base = DistillationOptions()
    distillation = dataclasses.replace(
        base,
        alpha=base.alpha if args.alpha is None else args.alpha,
        temperature=base.temperature if args.temperature is None else args.temperature,
    )
    result = distill(
        args.teacher,
        args.student,
        args.out,
        data=args.data,
        unlabeled=args.unlabeled,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        distillation=distillation,
        evaluation=args.evaluation,
        labels=args.labels,
        options=ConversionOptions.from_input_range(**_input_options(args), seed=args.seed),
        student_size=args.student_size,
    )
    report = result.report
    print(f"student: {result.path} ({report.student_parameters:,} parameters; teacher {report.teacher_parameters:,})")
    print(
        f"distilled {report.training.epochs} epochs on {report.training.photos} photos ({report.labeled_photos} labeled) in "
        f"{report.training.seconds:.0f} s (seed {report.seed}); teacher run on {report.teacher_images_run} images once"
    )
    accuracy = report.accuracy
    if accuracy is not None:
        print(
            f"on {accuracy.images} images: teacher top-1 {accuracy.teacher_top1:.2f}%, student {accuracy.student_top1:.2f}%, "
            f"agreement {accuracy.top1_agreement:.2f}%"
        )
    return 0
