"""``tillsight tune``: the most accurate bundle that meets a device's budget, measured where it will run.

The search walks a fixed space in order of cost, each candidate a normal bundle in
``out/candidates/<name>/<profile>/``:

1. ``int8``: post-training int8 (the profile as it is; always tried first, it is the reference);
2. ``qat``: quantization-aware fine-tuning, then int8 (the same graph as ``int8``: skipped when
   ``int8`` misses a latency, memory or size budget, which QAT cannot change);
3. ``channels-F``: channel pruning of a fraction F (0.3, then 0.5) fine-tuned with distillation
   from the original model, then int8;
4. ``student-S``: an ImageNet-pretrained EfficientNet-Lite0 distilled from the model at a smaller
   input side S (3/4, then 3/5 of the model's), then int8.

Each candidate's top-1 is measured on the evaluation photos and its drop counted from the original
float model's top-1 (measured with ``int8``); its latency (``classify()`` p50), peak memory and
size by :func:`tillsight.benchmark` on this host, or by a command that receives the bundle as a
tar on stdin and answers with benchmark JSON (``ssh kiosk-12 tillsight benchmark --json -``).

The search stops at the first candidate that meets every budget within the drop tolerance: the
later ones cost more and compress more, so they are not expected to be more accurate. Without a
latency, memory or size budget, or with ``TuneOptions(stop_early=False)`` (``--explore``), every candidate is
tried, and the winner is the most accurate that fits. Candidates that cannot help are skipped and listed with the reason:
QAT when int8 misses a resource budget (same graph), a stronger pruning or a smaller student
when the milder one already loses more than the tolerance, and any candidate whose estimated
time exceeds what is left of the time budget. The winner is copied to ``out/<profile>/`` atomically, with
the search recorded under ``"tune"`` in its manifest; ``tune.md`` and ``tune.png`` show every candidate.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..benchmarking import BenchmarkReport, BundleBenchmark, benchmark
from ..bundle import read_bundle, write_manifest
from ..conversion_options import ConversionOptions
from ..datasets import read_image_set, read_labels
from ..errors import DataError, TillsightError, summarize
from ..jsonfile import json_ready
from ..profiles import FINETUNE_EPOCHS, Profile, PruningMode, load_profile
from ..signing import load_private_key, sign_bundle
from ..staging import check_output_folder, staged_directory
from .tune_clock import Clock, forward_seconds, skip_reason
from .tune_report import write_report
from .tune_space import (
    STUDENT,
    Candidate,
    CandidateKind,
    CandidateResult,
    CandidateStatus,
    TuneOptions,
    TuneRequirements,
    TuneResult,
    search_space,
)

__all__ = [
    "TuneRequirements",
    "Candidate",
    "CandidateKind",
    "CandidateResult",
    "TuneResult",
    "search_space",
    "tune",
]  # the types: tune_space

logger = logging.getLogger(__name__)


def tune(
    model: str | Path,
    profile: str | Path | Profile,
    calibration: str | Path,
    evaluation: str | Path,
    finetune: str | Path,
    out: str | Path,
    labels: str | Path | None = None,
    options: ConversionOptions = ConversionOptions(),
    search: TuneOptions = TuneOptions(),
    on_result: Callable[[CandidateResult, int, int], None] | None = None,
) -> TuneResult:
    """Search for the most accurate bundle of ``model`` that meets ``profile``'s budget.

    Args:
        model: The Keras classifier (``.keras`` / ``.h5`` file or SavedModel folder).
        profile: Shipped profile name, profile TOML path, or a :class:`~tillsight.profiles.Profile`.
        calibration: Representative photos (class folder or list file).
        evaluation: Labeled photos every candidate's top-1 is measured on.
        finetune: Labeled photos for QAT, pruning's fine-tuning and the students.
        out: Folder for ``candidates/``, ``tune.md``, ``tune.png`` and the winner ``<profile>/``.
        labels: Labels file in output-index order.
        options: Input expectations of the model (colour order, crop, mean/std), signing key.
        search: The budget overrides, time budget, measuring command and search space (:class:`TuneOptions`).
        on_result: Called with each candidate's result, its number and the count, as the search goes.

    Returns:
        The search; ``winner`` is None when no candidate met the budget.

    Raises:
        ProfileError, ModelLoadError, DataError, OptionsError: Bad input, found before any candidate runs.
    """
    resolved = load_profile(profile) if not isinstance(profile, Profile) else profile
    budget = TuneRequirements.from_profile(resolved, search.max_latency_ms, search.max_top1_drop)
    epochs, frames, bench_command = search.epochs, search.frames, search.bench_command
    out = Path(out)
    label_names = read_labels(labels) if labels else None
    finetune_images = len(read_image_set(finetune, label_names).images)
    for data in (evaluation, calibration):
        read_image_set(data, label_names)  # a wrong path fails now, not after a candidate
    if options.sign_key is not None:
        load_private_key(options.sign_key)  # a wrong key fails now, not after the search
    check_output_folder(out / resolved.name)  # and an output folder that cannot take the winner
    qat_epochs = epochs or resolved.qat.epochs
    # channel candidates fine-tune: --epochs, else the profile's [pruning] finetune_epochs, else what their cut takes
    finetune_epochs = epochs or resolved.pruning.finetune_epochs
    student_epochs = finetune_epochs or FINETUNE_EPOCHS[PruningMode.CHANNELS]
    build = functools.partial(
        _build,
        model=model,
        profile=resolved,
        calibration=calibration,
        evaluation=evaluation,
        finetune=finetune,
        out=out,
        labels=labels,
        options=options,
    )
    search_started = time.monotonic()
    # int8 first: the reference (the original float top-1), the input size, and the time a conversion takes.
    reference = search_space((0, 0), qat_epochs, finetune_epochs, student_epochs)[0]
    started = time.monotonic()
    bundle_dir = build(reference)
    measured, measured_on = _measure(bundle_dir, frames, bench_command)
    manifest = read_bundle(bundle_dir, verify=False).manifest
    float_top1 = manifest.metrics.accuracy.float_top1 if manifest.metrics.accuracy else None
    input_size = (manifest.input.height, manifest.input.width)
    base_s = time.monotonic() - started
    clock = Clock(search.time_budget_s - base_s, finetune_images, forward_seconds(model, options, input_size), base_s)
    space = search_space(
        input_size,
        qat_epochs,
        finetune_epochs,
        student_epochs,
        search.channel_fractions,
        search.student_scales,
    )
    results = [_judge(reference, bundle_dir, manifest, measured, float_top1, budget, time.monotonic() - started)]
    first_fit = search.stop_early and budget.has_resource_budget  # else every candidate, then the most accurate
    winner = results[0] if results[0].meets_budget and first_fit else None
    _report(on_result, results[0], 1, len(space))
    for number, candidate in enumerate(space[1:], start=2):
        skip = skip_reason(candidate, results, winner, clock, input_size)
        if skip:
            result = CandidateResult(candidate, CandidateStatus.SKIPPED, skip)
        else:
            started = time.monotonic()
            try:
                bundle_dir = build(candidate)
                measured, measured_on = _measure(bundle_dir, frames, bench_command)
            except Exception as exc:  # noqa: BLE001 - one candidate that fails, for any reason, does not end the search
                result = CandidateResult(
                    candidate, CandidateStatus.FAILED, _failure(exc), seconds=round(time.monotonic() - started, 1)
                )
            else:
                seconds = time.monotonic() - started
                clock.learn_training(candidate, seconds, input_size)
                manifest = read_bundle(bundle_dir, verify=False).manifest
                result = _judge(candidate, bundle_dir, manifest, measured, float_top1, budget, seconds)
                if result.meets_budget and first_fit:
                    winner = result
        results.append(result)
        _report(on_result, result, number, len(space))
    if not first_fit:
        winner = _most_accurate(results)
    winner_path = _publish(winner, resolved.name, out, budget, results, measured_on, options) if winner else None
    tune_result = TuneResult(
        resolved.name,
        budget,
        measured_on,
        float_top1,
        tuple(results),
        winner,
        winner_path,
        round(time.monotonic() - search_started, 1),
        search.time_budget_s,
    )
    write_report(tune_result, out)
    return tune_result


def _failure(exc: Exception) -> str:
    """Why a candidate failed, in one line; a bug's traceback goes to the log, not into the report."""
    if isinstance(exc, TillsightError):
        return summarize(exc)
    logger.warning("tune: candidate failed with an unexpected %s", type(exc).__name__, exc_info=exc)
    return f"unexpected {type(exc).__name__}: {summarize(exc)}"


def _report(
    on_result: Callable[[CandidateResult, int, int], None] | None, result: CandidateResult, number: int, total: int
) -> None:
    logger.info("tune %s: %s, %s", result.candidate.name, result.status.value, result.note)
    if on_result is not None:
        on_result(result, number, total)


def _build(
    candidate: Candidate,
    *,
    model: str | Path,
    profile: Profile,
    calibration: str | Path,
    evaluation: str | Path,
    finetune: str | Path,
    out: Path,
    labels: str | Path | None,
    options: ConversionOptions,
) -> Path:
    """Write the candidate's bundle (and student) under ``out/candidates/<name>/``; return the bundle folder."""
    from .conversion import convert  # TensorFlow: only when a candidate runs
    from .distill import distill

    folder = out / "candidates" / candidate.name
    fields = {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if f.name not in ("pruning", "distillation", "qat", "allow_accuracy_drop")
    }
    fields["allow_accuracy_drop"] = True  # the search judges the drop
    source: str | Path = model
    if candidate.kind is CandidateKind.INT8:
        conversion = ConversionOptions.for_profile(profile, prune="none", **fields)
    elif candidate.kind is CandidateKind.QAT:
        conversion = ConversionOptions.for_profile(profile, prune="none", qat=True, qat_epochs=candidate.epochs, **fields)
    elif candidate.kind is CandidateKind.CHANNELS:
        conversion = ConversionOptions.for_profile(
            profile,
            prune=f"channels:{candidate.fraction:g}",
            finetune_epochs=candidate.epochs,
            distill=True,
            **fields,
        )
    else:
        student = distill(
            model,
            STUDENT,
            folder / "student.keras",
            data=finetune,
            epochs=candidate.epochs,
            labels=labels,
            options=ConversionOptions(**{**fields, "allow_accuracy_drop": False}),
            student_size=candidate.student_size,
        )
        source = student.path
        conversion = ConversionOptions.for_profile(profile, prune="none", **fields)
    needs_finetune = candidate.kind in (CandidateKind.QAT, CandidateKind.CHANNELS)
    bundle = convert(
        source,
        profile,
        calibration=calibration,
        out=folder,
        evaluation=evaluation,
        labels=labels,
        options=conversion,
        finetune=finetune if needs_finetune else None,
    )
    return bundle.path


def _measure(bundle_dir: Path, frames: int, bench_command: str | None) -> tuple[BundleBenchmark, str]:
    """The bundle's benchmark where it will run, and that place in words."""
    if bench_command is None:
        report = benchmark([bundle_dir], frames)
        return report.results[0], f"this host ({report.host.describe()})"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(bundle_dir, arcname=bundle_dir.name)
    try:
        completed = subprocess.run(bench_command, shell=True, input=archive.getvalue(), capture_output=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"--bench-command gave no answer in {exc.timeout:.0f} s: {bench_command}") from exc
    if completed.returncode != 0:
        last = (completed.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise DataError(f"--bench-command exited with {completed.returncode} ({last}): {bench_command}")
    try:
        data = json.loads(completed.stdout)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"--bench-command printed no benchmark JSON ({exc.msg}); it must end like 'tillsight benchmark --json -'"
        ) from exc
    report = BenchmarkReport.from_dict(data, "--bench-command's output")
    if len(report.results) != 1:
        raise DataError(f"--bench-command answered with {len(report.results)} results for one bundle")
    return report.results[0], f"{report.host.describe()} (--bench-command)"


def _judge(
    candidate: Candidate,
    bundle_dir: Path,
    manifest: Any,
    measured: BundleBenchmark,
    float_top1: float | None,
    budget: TuneRequirements,
    seconds: float,
) -> CandidateResult:
    accuracy = manifest.metrics.accuracy
    top1 = accuracy.converted_top1 if accuracy else None
    drop = round(float_top1 - top1, 3) if top1 is not None and float_top1 is not None else None
    latency, memory, size = measured.classify.p50_ms, measured.peak_rss_bytes, manifest.metrics.model_bytes
    resource_misses = budget.misses(latency, memory, size)
    drop_misses = drop is None or drop > budget.max_top1_drop
    misses = list(resource_misses)
    if drop_misses:
        misses.append(f"drop {'unmeasured' if drop is None else f'{drop:.2f}'} > {budget.max_top1_drop:g} points")
    note = "misses " + "; ".join(misses) if misses else "meets the budget"
    return CandidateResult(
        candidate,
        CandidateStatus.MEASURED,
        note,
        round(seconds, 1),
        str(bundle_dir),
        top1,
        drop,
        latency,
        memory,
        size,
        not misses,
        tuple(resource_misses),
        drop_misses,
    )


def _most_accurate(results: Sequence[CandidateResult]) -> CandidateResult | None:
    within = [r for r in results if r.meets_budget]
    return max(within, key=lambda r: (r.top1 or 0.0, -(r.latency_ms or 0.0)), default=None)


def _publish(
    winner: CandidateResult,
    profile: str,
    out: Path,
    budget: TuneRequirements,
    results: Sequence[CandidateResult],
    measured_on: str,
    options: ConversionOptions,
) -> Path:
    """Copy the winner to ``out/<profile>/`` atomically, the search recorded in its manifest (re-signed when a key is given)."""
    final = out / profile
    with staged_directory(final) as staging:
        shutil.copytree(winner.bundle, staging, dirs_exist_ok=True)
        (staging / "signature.json").unlink(missing_ok=True)  # the manifest changes: an old signature would not hold
        tune = {
            "winner": winner.candidate.name,
            "recipe": winner.candidate.recipe,
            "measured_on": measured_on,
            "budget": json_ready(budget),
            "candidates": json_ready(results),  # as in tune.json
        }
        write_manifest(staging, dataclasses.replace(read_bundle(staging).manifest, tune=tune))
        if options.sign_key is not None:
            sign_bundle(staging, options.sign_key)
        read_bundle(staging, verify=True)
    return final
