"""The tillsight command: each subcommand's output and exit code."""

from __future__ import annotations

import json

import pytest

from tillsight import cli
from tillsight.demo import ASSETS

from .conftest import REPO, REQUIRED_PROFILES

REPO_PROFILES = REPO / "device_profiles"


def test_profiles_lists_every_shipped_profile(capsys):
    assert cli.main(["profiles"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert REQUIRED_PROFILES <= names


def test_inspect_verifies_and_summarises(capsys):
    bundle = ASSETS / "classifier"  # the shipped int8 bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert cli.main(["inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "(files match the manifest)" in out and "generic-x86-cpu" in out and "signature: " in out
    assert f"agreement {manifest['metrics']['accuracy']['top1_agreement']:.2f}%" in out
    missed = manifest["metrics"]["accuracy"]["within_tolerance"] is False
    assert ("WARNING: the accuracy check missed its tolerance" in out) == missed
    assert cli.main(["inspect", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile_name"] == "generic-x86-cpu"


@pytest.mark.integration
def test_classify_prints_labels_and_fails_on_unreadable_images(bundle_dir, photos, tmp_path, capsys):
    images = [str(p) for p, _ in photos.eval_items[:3]]
    assert cli.main(["classify", str(bundle_dir), *images, "--json", "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == images
    assert all(len(line["predictions"]) == 2 and line["predictions"][0]["label"] in photos.labels for line in lines)
    junk = tmp_path / "junk.jpg"
    junk.write_text("no")
    assert cli.main(["classify", str(bundle_dir), images[0], str(junk)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(images[0]) and "junk.jpg is not an image OpenCV can decode" in captured.err
    assert cli.main(["classify", str(bundle_dir), str(tmp_path / "gone.jpg")]) == 1
    assert "gone.jpg does not exist" in capsys.readouterr().err


def test_inspect_of_a_non_bundle_is_one_line(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a tillsight bundle" in err[0]


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["deploy"])
    assert exit_info.value.code == 2


def test_input_range_is_named_or_joined_to_its_flag_and_a_split_dash_value_says_how(capsys):
    """Keras's MobileNetV2 expects -1-1: ``--input-range symmetric`` or ``--input-range=-1-1``; argv is never rewritten."""
    from tillsight.cli_parser import build_parser

    command = ["distill", "teacher.keras", "--student", "s", "--out", "s.keras"]
    for spelling, value in (
        (["--input-range=-1-1"], "-1-1"),
        (["--input-range", "symmetric"], "-1-1"),
        (["--input-range", "unit"], "0-1"),
    ):
        assert build_parser().parse_args([*command, *spelling]).input_range == value
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--input-range", "-1-1"])
    assert "write --input-range=-1-1, or --input-range symmetric" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--input-range", "0-2"])
    assert "'0-2' is none of pixels (0-255), unit (0-1), symmetric (-1-1)" in capsys.readouterr().err


def test_every_flag_of_every_command_says_what_it_does():
    import argparse

    from tillsight.cli_parser import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    silent = [
        f"{name} {action.option_strings[0]}"
        for name, parser in commands.choices.items()
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert silent == []
    assert "how many labels" in commands.choices["classify"].format_help()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--bundle", "b", "--source", "v.mp4", "--threads", "-1"], "--threads: must be at least 1, got -1"),
        (["run", "--bundle", "b", "--source", "v.mp4", "--fps", "-3"], "--fps: must be above 0, got '-3'"),
        (["run", "--bundle", "b", "--source", "v.mp4", "--fps", "inf"], "--fps: expected a finite number, got 'inf'"),
        (["benchmark", "b", "--frames", "0"], "--frames: must be at least 1, got 0"),
        (["classify", "b", "x.jpg", "--top-k", "0"], "--top-k: must be at least 1, got 0"),
        (
            ["convert", "m.keras", "--profile", "generic-x86-cpu", "--calibration", "c", "--out", "o", "--std", "inf,1,1"],
            "--std: expected three finite numbers, got 'inf,1,1'",
        ),
    ],
)
def test_numbers_out_of_range_are_refused_in_one_line_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1], err


def test_a_profile_with_absurd_threads_is_refused(tmp_path):
    from tillsight.errors import ProfileError
    from tillsight.profiles import load_profile

    text = (REPO_PROFILES / "generic-x86-cpu.toml").read_text().replace("threads = 2", "threads = 100000")
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ProfileError, match="'threads' must be between 1 and 256, got 100000"):
        load_profile(tmp_path / "p.toml")
