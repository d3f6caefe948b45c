"""Library messages are reduced to one useful line at the boundary."""

from __future__ import annotations

from tillsight.errors import summarize


def test_summarize_takes_the_first_line_or_the_first_error_line():
    log = "Edge TPU Compiler version 16\n\nERROR: op GELU unsupported\nmore\n"
    assert summarize(log) == "Edge TPU Compiler version 16"
    assert summarize(log, prefer_errors=True) == "ERROR: op GELU unsupported"
    assert summarize("compiler crashed\nsecond", prefer_errors=True) == "compiler crashed"  # no error line: the first
    assert summarize("x" * 500, limit=10) == "x" * 10


def test_summarize_survives_empty_messages():
    assert summarize(RuntimeError("")) == "RuntimeError"
    assert summarize(ValueError("  \n ")) == "ValueError"
    assert summarize("") == "no output"
