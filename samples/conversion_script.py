"""What the per-device conversion scripts share: arguments, one conversion per profile, a summary.

Each ``convert_for_*.py`` script names its device family's profiles and what to check
after converting; this module does the rest through tillsight's public API (the same
calls the ``tillsight convert`` command makes).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import tillsight


def parse_args(description: str, profiles: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", help="Keras classifier: .keras / .h5 file or SavedModel directory")
    parser.add_argument("--calibration", required=True, help="class folder or list file of representative images")
    parser.add_argument("--eval", dest="evaluation", help="labeled held-out images for the accuracy check")
    parser.add_argument("--labels", help="labels file, one label a line in output order")
    parser.add_argument("--out", default="out/bundles", help="bundles go to OUT/<profile>/")
    parser.add_argument("--profile", action="append", choices=list(profiles), help="only these (default: all of the family)")
    parser.add_argument("--input-range", default="0-255", choices=["0-255", "0-1", "-1-1"], help="what the model expects")
    parser.add_argument("--prune", help="e.g. channels:0.3 or unstructured:0.5 (default: the profile's [pruning])")
    parser.add_argument("--finetune", help="labeled photos to fine-tune on after pruning")
    args = parser.parse_args()
    args.profiles = args.profile or list(profiles)
    return args


def convert_family(args: argparse.Namespace, check: Callable[[tillsight.Bundle], None] | None = None) -> int:
    """Convert for each profile; a failure of one profile does not stop the others. Returns the exit code."""
    failures = 0
    for profile in args.profiles:
        try:
            options = tillsight.ConversionOptions.for_profile(
                profile, prune=args.prune, input_range=args.input_range, progress=True
            )
            bundle = tillsight.convert(
                Path(args.model),
                profile,
                calibration=args.calibration,
                out=args.out,
                evaluation=args.evaluation,
                labels=args.labels,
                options=options,
                finetune=args.finetune,
            )
        except tillsight.OptionsError as exc:  # a bad --prune setting: every profile would fail the same way
            print(f"{profile}: FAILED: {exc}")
            return 2
        except tillsight.TillsightError as exc:
            print(f"{profile}: FAILED: {exc}")
            failures += 1
            continue
        metrics = bundle.manifest.metrics
        accuracy = metrics.accuracy
        measured = (
            f"top-1 {accuracy.converted_top1:.2f}% (drop {accuracy.top1_drop:.2f}), agreement {accuracy.top1_agreement:.2f}%"
            if accuracy
            else "no --eval: accuracy not measured"
        )
        if metrics.pruning:
            measured += f"; pruned {metrics.pruning.mode} {metrics.pruning.fraction:g}"
        print(f"{profile}: {bundle.path} ({metrics.model_bytes / 1e6:.2f} MB), {measured}")
        if check is not None:
            check(bundle)
    return 1 if failures else 0
