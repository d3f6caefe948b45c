"""Multi-lane kiosks: several cameras or trays in one process, on one model.

::

    lanes = [Lane("1", open_source(0), roi=(120, 40, 280, 280)), Lane("2", open_source(2), roi=(80, 20, 300, 300))]
    with tillsight.load("bundles/intel-iris-xe", throughput=True) as classifier:
        MultiLanePipeline(lanes, classifier, [JsonLines()]).run()

Each lane has its own source, tray region, empty-tray state, votes and basket, and its id is
on every event it emits. One model sits in memory; the inference thread serves the lanes in
turns (one frame of each lane per turn, in lane order), and a turn's frames go to the model
in one :meth:`~tillsight.Classifier.infer_many` call, which OpenVINO loaded with
``throughput=True`` runs in parallel streams.

From the command line, ``tillsight run BUNDLE --lane 1:SOURCE:X,Y,W,H --lane 2:SOURCE`` or
``--lanes lanes.toml``::

    [[lane]]
    id = "1"
    source = "0"            # as --source: camera index, URL, video file or folder
    roi = [120, 40, 280, 280]
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..classifier import Classifier
from ..errors import OptionsError
from .metrics import PipelineMetrics
from .pipeline import FrameResult, PipelineOptions, _LanesPipeline
from .sinks import Sink

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Lane", "LaneSpec", "MultiLanePipeline", "parse_lane", "read_lanes_file"]


@dataclasses.dataclass(frozen=True)
class LaneSpec:
    """A lane as written on the command line or in a lanes file, before its source is opened.

    Attributes:
        lane_id: The lane's id, on every event of the lane.
        source: As ``--source``: camera index, stream URL, video file or folder.
        roi: Tray region ``(x, y, width, height)``, or None for the whole frame.
    """

    lane_id: str
    source: str
    roi: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if not self.lane_id or any(c in self.lane_id for c in ":/#+ "):
            raise OptionsError(
                f"lane id {self.lane_id!r} must be a short name without ':', '/', '#', '+' or spaces (1, 2, left...)"
            )
        if not self.source:
            raise OptionsError(f"lane {self.lane_id} has no source; write ID:SOURCE[:X,Y,W,H]")
        if self.roi is not None and (len(self.roi) != 4 or self.roi[2] <= 0 or self.roi[3] <= 0):
            raise OptionsError(
                f"lane {self.lane_id}: tray region {self.roi} must be 4 numbers x,y,width,height with positive width and height"
            )


def _roi(text: str, lane_id: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise OptionsError(f"lane {lane_id}: tray region {text!r} is not x,y,width,height in pixels") from None
    if len(values) != 4:
        raise OptionsError(f"lane {lane_id}: tray region {text!r} is not x,y,width,height in pixels")
    x, y, width, height = values
    return x, y, width, height


def parse_lane(text: str) -> LaneSpec:
    """``ID:SOURCE[:X,Y,W,H]`` (a source may itself hold ':', as in rtsp://host:554/x).

    Raises:
        OptionsError: Not of that form.
    """
    lane_id, separator, rest = text.partition(":")
    if not separator:
        raise OptionsError(f"--lane {text!r}: write ID:SOURCE[:X,Y,W,H], e.g. 1:0:120,40,280,280")
    source, roi = rest, None
    head, _, tail = rest.rpartition(":")
    if head and "," in tail and re.fullmatch(r"[\d,\s-]+", tail):  # a tray region (a port has no comma)
        source, roi = head, _roi(tail, lane_id)
    return LaneSpec(lane_id, source, roi)


def read_lanes_file(path: str | Path) -> list[LaneSpec]:
    """Lanes from a TOML file of ``[[lane]]`` tables with ``id``, ``source`` and optional ``roi``.

    Raises:
        OptionsError: Unreadable file, bad TOML, or a lane without its keys.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionsError(f"cannot read the lanes file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise OptionsError(f"lanes file {path} is not valid TOML: {exc}") from exc
    tables = data.get("lane")
    if not isinstance(tables, list) or not tables:
        raise OptionsError(f"lanes file {path} has no [[lane]] tables; each needs id and source (and roi)")
    lanes = []
    for table in tables:
        unknown = set(table) - {"id", "source", "roi"}
        if unknown or "id" not in table or "source" not in table:
            raise OptionsError(f"lanes file {path}: each [[lane]] takes id, source and roi (got {', '.join(sorted(table))})")
        roi = table.get("roi")
        region = _roi(",".join(str(v) for v in roi), str(table["id"])) if roi is not None else None
        lanes.append(LaneSpec(str(table["id"]), str(table["source"]), region))
    return lanes


@dataclasses.dataclass(frozen=True)
class Lane:
    """One lane of a kiosk, ready to run.

    Attributes:
        lane_id: The lane's id, on every event it emits.
        source: Its frame source (see :func:`tillsight.pipelines.open_source`).
        roi: Its tray region; None: ``options.checkout.roi``.
        tray_reference: A picture of its empty tray region; learned when None.
    """

    lane_id: str
    source: Any
    roi: tuple[int, int, int, int] | None = None
    tray_reference: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)


class MultiLanePipeline(_LanesPipeline):
    """Several lanes on one classifier: one model in memory, fair turns, lane ids on events."""

    def __init__(
        self,
        lanes: Sequence[Lane],
        classifier: Classifier,
        sinks: Sequence[Sink] = (),
        options: PipelineOptions = PipelineOptions(),
        on_frame: Callable[[FrameResult], None] | None = None,
    ):
        """Args:
        lanes: The lanes, each with its own source and tray region.
        classifier: The shared model (load it with ``throughput=True`` on OpenVINO).
        sinks: Callables receiving each event of every lane (``event.lane`` tells which).
        options: Thresholds and policies shared by the lanes (``max_frames`` per lane).
        on_frame: As for :class:`~tillsight.pipelines.CheckoutPipeline` (``result.lane`` tells which).

        Raises:
            OptionsError: No lanes, two lanes with one id, or a ``background_label`` the model lacks.
        """
        ids = [lane.lane_id for lane in lanes]
        if not lanes or len(set(ids)) != len(ids):
            raise OptionsError(f"a multi-lane kiosk needs lanes with distinct ids, got {ids}")
        specs = [
            (
                lane.lane_id,
                lane.source,
                dataclasses.replace(options.checkout, roi=lane.roi or options.checkout.roi),
                lane.tray_reference,
            )
            for lane in lanes
        ]
        super().__init__(specs, classifier, sinks, options, on_frame)

    def run(self) -> dict[str, PipelineMetrics]:
        """Start and block until every lane's source ends (Ctrl-C stops cleanly).

        Returns:
            Each lane's final metrics, by lane id.

        Raises:
            SourceError: A source could not be opened, or was lost for good.
        """
        self._run_to_end()
        return self.metrics()

    def metrics(self) -> dict[str, PipelineMetrics]:
        """Each lane's current measurements, by lane id (thread-safe)."""
        return {lane.lane_id: self._lane_metrics(lane) for lane in self._lanes}
