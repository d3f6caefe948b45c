"""Checkout events: what the pipeline tells the kiosk app."""

from __future__ import annotations

import dataclasses
from typing import Any, Union

__all__ = ["ProductRecognized", "UnknownProduct", "Event"]


@dataclasses.dataclass(frozen=True)
class ProductRecognized:
    """One item on the tray, recognized by a clear majority of recent frames.

    Attributes:
        label: The product's class label.
        score: Mean score of the frames that voted for it.
        first_seen: Timestamp (the frames' clock) when the item arrived on the tray.
        last_seen: Timestamp of the frame that settled the vote.
        frames: How many of the recent frames voted for ``label``.
        source_id: The source the frames came from.
    """

    label: str
    score: float
    first_seen: float
    last_seen: float
    frames: int
    source_id: str = ""

    kind = "product_recognized"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the event kind first, then the fields."""
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class UnknownProduct:
    """An item stayed on the tray without any label winning the vote: staff should look.

    Attributes:
        first_seen: Timestamp when the item arrived on the tray.
        last_seen: Timestamp of the frame that passed the waiting time.
        frames: Frames classified while it was on the tray.
        candidates: The most frequent labels among those frames and their vote counts.
        source_id: The source the frames came from.
    """

    first_seen: float
    last_seen: float
    frames: int
    candidates: tuple[tuple[str, int], ...] = ()
    source_id: str = ""

    kind = "unknown_product"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the event kind first, then the fields."""
        data = dataclasses.asdict(self)
        data["candidates"] = [{"label": label, "votes": votes} for label, votes in self.candidates]
        return {"event": self.kind, **data}


Event = Union[ProductRecognized, UnknownProduct]
