"""The value types of the ``tillsight`` options: each parses one option's text or says, in one line, what it expected."""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

from .preprocess import InputRange

__all__ = ["count", "duration", "finite", "input_range", "non_negative", "positive", "roi", "size", "triple"]


def triple(text: str) -> tuple[float, float, float]:
    """Three finite numbers, comma-separated (a mean or std per channel)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 123.7,116.3,103.5, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected three finite numbers, got {text!r}")
    return values


def count(minimum: int) -> Any:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def finite(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """An argparse type: a finite number of 0 or more."""
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def size(text: str) -> tuple[int, int]:
    """An input size: ``160`` or ``160x128`` (height x width), at least 8 pixels."""
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 160 or 160x128 (height x width), got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 8:
        raise argparse.ArgumentTypeError(f"expected a size like 160 or 160x128 of at least 8 pixels, got {text!r}")
    return (values[0], values[-1])


def roi(text: str) -> tuple[int, int, int, int]:
    """A region ``x,y,width,height`` in pixels."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x,y,width,height in pixels like 120,40,280,280, got {text!r}") from None
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0 or min(values[:2]) < 0:
        raise argparse.ArgumentTypeError(f"expected x,y,width,height with a positive size, got {text!r}")
    return values


#: Names of the input ranges that do not start with a dash (``--input-range -1-1`` reads as a flag to argparse).
RANGE_NAMES = {"pixels": InputRange.PIXELS, "unit": InputRange.UNIT, "symmetric": InputRange.SYMMETRIC}


def input_range(text: str) -> str:
    """An input range by name (``pixels``, ``unit``, ``symmetric``) or as written (``-1-1``)."""
    value = RANGE_NAMES[text].value if text in RANGE_NAMES else text
    if value not in {r.value for r in InputRange}:
        names = ", ".join(f"{name} ({member.value})" for name, member in RANGE_NAMES.items())
        raise argparse.ArgumentTypeError(f"{text!r} is none of {names}")
    return value


def duration(text: str) -> float:
    """Seconds from ``45m``, ``1h``, ``1h30m``, ``90s`` or a bare number of seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write 45m, 1h, 1h30m or 600s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
