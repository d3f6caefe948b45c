"""Checkout events: what the pipeline tells the kiosk app.

Every event has an ``event_id``: the same item on the same source at the same time always
gets the same id, so a kiosk that is restarted and replays a recording, or an outbox that
sends an event twice, produces duplicates a consumer can drop by id.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, ClassVar

__all__ = ["ProductRecognized", "UnknownProduct", "Event", "event_id"]

_EVENT_NAMESPACE = uuid.UUID("5b3c8f0e-3d1a-4c55-9a0e-7f2d6c1b9e41")


def event_id(kind: str, source_id: str, first_seen: float, lane: str = "") -> str:
    """The id of the event of ``kind`` for the item that arrived at ``first_seen`` on ``source_id`` (in ``lane``)."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{kind}|{lane}|{source_id}|{first_seen:.6f}"))


class _ItemEvent:
    """What every event about an item on the tray shares: its id, and its JSON form."""

    kind: ClassVar[str]
    source_id: str
    first_seen: float
    lane: str

    @property
    def event_id(self) -> str:
        """Unique per item presence and source; the same again when a recording is replayed."""
        return event_id(self.kind, self.source_id, self.first_seen, self.lane)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the event kind and id first, then the fields."""
        return {"event": self.kind, "id": self.event_id, **self._fields()}

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass
        return fields


@dataclasses.dataclass(frozen=True)
class ProductRecognized(_ItemEvent):
    """One item on the tray, recognized by a clear majority of recent frames.

    Attributes:
        label: The product's class label.
        score: Mean score of the frames that voted for it.
        first_seen: Timestamp (the frames' clock) when the item arrived on the tray.
        last_seen: Timestamp of the frame that settled the vote.
        frames: How many of the recent frames voted for ``label``.
        source_id: The source the frames came from.
        lane: The checkout lane (a multi-lane kiosk's lane id; empty for one lane).
        bundle_version: The version of the bundle whose model decided it (see :attr:`Classifier.version`).
        model_sha256: The sha256 of that bundle's model file.
    """

    label: str
    score: float
    first_seen: float
    last_seen: float
    frames: int
    source_id: str = ""
    lane: str = ""
    bundle_version: str = ""
    model_sha256: str = ""

    kind: ClassVar[str] = "product_recognized"


@dataclasses.dataclass(frozen=True)
class UnknownProduct(_ItemEvent):
    """An item stayed on the tray without any label winning the vote: staff should look.

    Attributes:
        first_seen: Timestamp when the item arrived on the tray.
        last_seen: Timestamp of the frame that passed the waiting time.
        frames: Frames classified while it was on the tray.
        candidates: The most frequent labels among those frames and their vote counts.
        source_id: The source the frames came from.
        lane: The checkout lane (a multi-lane kiosk's lane id; empty for one lane).
        bundle_version: The version of the bundle whose model decided it (see :attr:`Classifier.version`).
        model_sha256: The sha256 of that bundle's model file.
    """

    first_seen: float
    last_seen: float
    frames: int
    candidates: tuple[tuple[str, int], ...] = ()
    source_id: str = ""
    lane: str = ""
    bundle_version: str = ""
    model_sha256: str = ""

    kind: ClassVar[str] = "unknown_product"

    def _fields(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["candidates"] = [{"label": label, "votes": votes} for label, votes in self.candidates]
        return data


Event = ProductRecognized | UnknownProduct
