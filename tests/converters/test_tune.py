"""tillsight tune: the search on a tiny model and real photos, its report, the winner, device measurement."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

import tillsight
from tillsight import cli
from tillsight.bundle import read_bundle
from tillsight.cli_values import duration as _duration
from tillsight.converters.tune import CandidateKind, TuneOptions, TuneRequirements, search_space, tune
from tillsight.converters.tune_space import read_tune_record
from tillsight.errors import OptionsError
from tillsight.profiles import load_profile
from tillsight.validation import validate

from ..conftest import requires_weights


@pytest.mark.parametrize(("text", "seconds"), [("45m", 2700), ("1h30m", 5400), ("90s", 90), ("600", 600), ("0.5h", 1800)])
def test_time_budgets_read_as_durations(text, seconds):
    assert _duration(text) == seconds


def test_bad_time_budget_is_one_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(
            [
                "tune",
                "m.keras",
                "--profile",
                "raspberry-pi-4",
                "--calibration",
                "c",
                "--eval",
                "e",
                "--finetune",
                "f",
                "--out",
                "o",
                "--time-budget",
                "soon",
            ]
        )
    assert "'soon' is not a duration: write 45m" in capsys.readouterr().err


def test_budget_comes_from_the_profile_and_flags_override_it():
    pi = load_profile("raspberry-pi-4")
    budget = TuneRequirements.from_profile(pi)
    assert (budget.max_latency_ms, budget.max_memory_bytes, budget.max_top1_drop) == (150.0, 512_000_000, 1.0)
    assert TuneRequirements.from_profile(pi, max_latency_ms=9, max_top1_drop=2).max_latency_ms == 9
    assert not TuneRequirements.from_profile(load_profile("generic-x86-cpu")).has_resource_budget
    assert budget.misses(160.0, 10, 10) == ["latency 160.00 ms > 150.00 ms"]
    with pytest.raises(OptionsError):
        TuneRequirements.from_profile(pi, max_latency_ms=-1)


def test_search_space_goes_in_order_of_cost():
    space = search_space((224, 224), 2, 3, 3)
    assert [c.name for c in space] == ["int8", "qat", "channels-0.3", "channels-0.5", "student-168", "student-136"]
    assert [c.kind for c in space][:2] == [CandidateKind.INT8, CandidateKind.QAT]
    assert space[4].student_size == (168, 168) and space[2].epochs == 3
    # without a count, each channel candidate trains what its cut takes by default: more for the larger cut
    unset = search_space((224, 224), 2, None, 8)
    assert [c.epochs for c in unset[2:4]] == [8, 16] and "16 epochs" in unset[3].recipe


def _args(tiny_model_file, photos, out):
    return dict(
        model=tiny_model_file,
        profile="raspberry-pi-4",
        calibration=photos.train_list,
        evaluation=photos.eval_list,
        finetune=photos.train_list,
        out=out,
        labels=photos.labels_file,
    )


def _search(**changes):
    """The search options of these tests: few timed runs, one epoch per training candidate."""
    return TuneOptions(frames=5, epochs=1, **changes)


@pytest.mark.integration
def test_a_budget_int8_meets_stops_the_search_and_is_published_measured_by_a_bench_command(tiny_model_file, photos, tmp_path):
    """The bundle goes to the command as a tar on stdin (here a local 'tillsight benchmark'), as to ssh kiosk-12."""
    out = tmp_path / "tune"
    command = f"{shlex.quote(sys.executable)} -m tillsight benchmark --json - --frames 3"
    code = cli.main(
        [
            "tune",
            str(tiny_model_file),
            "--profile",
            "raspberry-pi-4",
            "--calibration",
            str(photos.train_list),
            "--eval",
            str(photos.eval_list),
            "--finetune",
            str(photos.train_list),
            "--labels",
            str(photos.labels_file),
            "--out",
            str(out),
            "--max-latency-ms",
            "10000",
            "--max-drop",
            "100",
            "--bench-command",
            command,
            "--frames",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    winner = read_bundle(out / "raspberry-pi-4")  # verified: the manifest edit did not break its sums
    search = json.loads((out / "raspberry-pi-4" / "manifest.json").read_text())["tune"]
    assert search["winner"] == "int8" and search["measured_on"].endswith("(--bench-command)")
    assert [c["status"] for c in search["candidates"]] == ["measured"] + ["skipped"] * 5
    assert all("int8 already meets the budget" in c["note"] for c in search["candidates"][1:])
    assert winner.manifest.tune["budget"]["max_latency_ms"] == 10000
    report = (out / "tune.md").read_text()
    assert "**winner**" in report and "student-48" in report and (out / "tune.png").stat().st_size > 1000
    record = read_tune_record(out / "tune.json")
    assert record.winner == "int8" and "int8" in record.pareto and record.candidates[0].latency_ms > 0
    with tillsight.load(out / "raspberry-pi-4") as classifier:
        assert classifier.labels == photos.labels


@pytest.mark.integration
@requires_weights
def test_a_latency_budget_nothing_meets_tries_the_space_and_keeps_the_earlier_winner(tiny_model_file, photos, tmp_path):
    out = tmp_path / "tune"
    first = tune(
        **_args(tiny_model_file, photos, out),
        search=_search(max_latency_ms=10000, max_top1_drop=100, channel_fractions=(), student_scales=()),
    )
    kept = (out / "raspberry-pi-4" / "manifest.json").read_bytes()
    seen = []
    result = tune(
        **_args(tiny_model_file, photos, out),
        search=_search(max_latency_ms=0.001, channel_fractions=(0.5,), student_scales=(0.75,)),
        on_result=lambda r, n, total: seen.append((r.candidate.name, n, total)),
    )
    assert first.winner is not None and result.winner is None and result.winner_path is None
    assert (out / "raspberry-pi-4" / "manifest.json").read_bytes() == kept  # a failed search never replaces a winner
    assert seen == [("int8", 1, 4), ("qat", 2, 4), ("channels-0.5", 3, 4), ("student-48", 4, 4)]
    int8, qat, pruned, student = result.results
    assert int8.status == "measured" and int8.note.startswith("misses latency")
    assert qat.status == "skipped" and "same int8 graph as int8, which misses latency" in qat.note
    for candidate in (pruned, student):
        assert candidate.status == "measured", candidate.note
        assert (out / "candidates" / candidate.candidate.name / "raspberry-pi-4" / "manifest.json").is_file()
        assert 0 <= candidate.top1 <= 100 and candidate.latency_ms > 0
    assert pruned.model_bytes < int8.model_bytes and (out / "candidates" / "student-48" / "student.keras").is_file()
    report = (out / "tune.md").read_text()
    assert "no candidate met the budget" in report and report.count("| student-48 |") == 1
    assert "skipped: same int8 graph" in report


@pytest.mark.integration
def test_candidates_that_cannot_finish_in_the_time_budget_are_skipped_and_listed(tiny_model_file, photos, tmp_path):
    result = tune(
        **_args(tiny_model_file, photos, tmp_path / "tune"),
        search=_search(max_latency_ms=0.001, time_budget_s=1, student_scales=()),
    )
    assert [r.status for r in result.results] == ["measured", "skipped", "skipped", "skipped"]
    assert all("min of the time budget left" in r.note for r in result.results[2:])


def test_candidates_that_cannot_help_are_skipped_with_the_reason():
    from tillsight.converters.tune import CandidateResult
    from tillsight.converters.tune_clock import Clock, skip_reason
    from tillsight.converters.tune_space import CandidateStatus

    space = search_space((64, 64), 1, 1, 1)
    int8 = CandidateResult(
        space[0],
        CandidateStatus.MEASURED,
        "misses latency 9.00 ms > 6 ms",
        top1_drop=0.2,
        resource_misses=("latency 9.00 ms > 6 ms",),
    )
    mild = CandidateResult(space[2], CandidateStatus.MEASURED, "misses drop 7.00 > 1 points", top1_drop=7.0, drop_misses=True)
    roomy = Clock(3600, 100, 0.001)
    assert skip_reason(space[1], [int8], None, roomy, (64, 64)) == "same int8 graph as int8, which misses latency 9.00 ms > 6 ms"
    assert (
        skip_reason(space[3], [int8, mild], None, roomy, (64, 64))
        == "compresses more than channels-0.3, which already loses 7.00 points"
    )
    assert skip_reason(space[4], [int8, mild], None, roomy, (64, 64)) == ""  # a student is another road
    assert skip_reason(space[4], [int8], None, Clock(60, 100, 10.0), (64, 64)).startswith("needs about ")


@pytest.mark.integration
def test_without_a_resource_budget_every_candidate_is_tried_and_the_most_accurate_wins(tiny_model_file, photos, tmp_path):
    args = {**_args(tiny_model_file, photos, tmp_path / "tune"), "profile": "generic-x86-cpu"}  # no [budgets]
    result = tune(**args, search=_search(max_top1_drop=100, channel_fractions=(0.5,), student_scales=()))
    assert [r.status for r in result.results] == ["measured", "measured", "measured"]  # no early stop
    assert result.winner is not None and result.winner_path == tmp_path / "tune" / "generic-x86-cpu"
    assert read_bundle(result.winner_path).manifest.tune["winner"] == result.winner.candidate.name
    # independently of the search's own figures: every candidate's bundle classifies the evaluation photos again
    measured = {r.candidate.name: validate(r.bundle, photos.eval_list, photos.labels_file).top1 for r in result.results}
    assert measured[result.winner.candidate.name] == max(measured.values()), measured  # the most accurate wins


@pytest.mark.integration
def test_explore_keeps_searching_after_a_fit_and_keeps_the_most_accurate_fit(tiny_model_file, photos, tmp_path):
    result = tune(
        **_args(tiny_model_file, photos, tmp_path / "tune"),
        search=_search(max_latency_ms=10000, max_top1_drop=100, channel_fractions=(0.5,), student_scales=(), stop_early=False),
    )
    assert [r.status for r in result.results] == ["measured", "measured", "measured"]  # int8 fits, the search goes on
    assert all(r.meets_budget for r in result.results)
    measured = {r.candidate.name: validate(r.bundle, photos.eval_list, photos.labels_file).top1 for r in result.results}
    assert measured[result.winner.candidate.name] == max(measured.values()), measured  # the most accurate fit, re-measured


@pytest.mark.integration
def test_a_candidate_that_fails_is_listed_with_its_reason_and_the_search_goes_on(tiny_model_file, photos, tmp_path, monkeypatch):
    """A bug in one candidate (here channels-0.3 raising a plain ValueError) must not end the search or lose the others."""
    from tillsight.converters import tune as tune_module

    real_build = tune_module._build

    def failing_build(candidate, **kwargs):
        if candidate.name == "channels-0.3":
            raise ValueError("Output with path 0 is not connected to inputs")
        return real_build(candidate, **kwargs)

    monkeypatch.setattr(tune_module, "_build", failing_build)
    result = tune(
        **_args(tiny_model_file, photos, tmp_path / "tune"),
        search=_search(
            max_latency_ms=10000, max_top1_drop=100, channel_fractions=(0.3, 0.5), student_scales=(), stop_early=False
        ),
    )
    statuses = {r.candidate.name: (r.status, r.note) for r in result.results}
    assert statuses["channels-0.3"] == ("failed", "unexpected ValueError: Output with path 0 is not connected to inputs")
    assert statuses["channels-0.5"][0] == "measured"  # tried after the failure
    assert result.winner is not None and result.winner.candidate.name != "channels-0.3"
    assert "failed: unexpected ValueError" in (tmp_path / "tune" / "tune.md").read_text()
