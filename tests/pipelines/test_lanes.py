"""Multi-lane kiosks: several sources on one model, fair turns, a basket and lane id per lane."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import tillsight
from tillsight import cli
from tillsight.demo import ASSETS, demo_script
from tillsight.errors import OptionsError
from tillsight.pipelines import Basket, CheckoutOptions, Lane, MultiLanePipeline, PipelineOptions, open_source
from tillsight.pipelines.lanes import LaneSpec, parse_lane, read_lanes_file
from tillsight.testing import fake_classifier

from .helpers import ScriptedSource

SCRIPT = demo_script()
ROI = SCRIPT.roi
EXPECTED = [p.label for p in SCRIPT.placements]
VIDEO = str(ASSETS / "checkout.mp4")


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("1:0", LaneSpec("1", "0")),
        ("1:checkout.mp4:120,40,280,280", LaneSpec("1", "checkout.mp4", (120, 40, 280, 280))),
        ("left:rtsp://cam:554/stream", LaneSpec("left", "rtsp://cam:554/stream")),
        ("2:rtsp://cam:554/stream:0,0,640,480", LaneSpec("2", "rtsp://cam:554/stream", (0, 0, 640, 480))),
    ],
)
def test_lane_flags_are_parsed(text, spec):
    assert parse_lane(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("video.mp4", "write ID:SOURCE"),
        ("1:", "lane 1 has no source"),
        ("a b:0", "must be a short name"),
        ("1:video.mp4:120,40,280", "is not x,y,width,height"),
        ("1:video.mp4:120,40,0,280", "positive width and height"),
    ],
)
def test_bad_lane_flags_say_what_to_write(text, message):
    with pytest.raises(OptionsError, match=message):
        parse_lane(text)


def test_lanes_file(tmp_path):
    path = tmp_path / "lanes.toml"
    path.write_text(
        '[[lane]]\nid = 1\nsource = "0"\nroi = [120, 40, 280, 280]\n\n[[lane]]\nid = "2"\nsource = "rtsp://cam:554/x"\n'
    )
    assert read_lanes_file(path) == [LaneSpec("1", "0", (120, 40, 280, 280)), LaneSpec("2", "rtsp://cam:554/x")]
    path.write_text('[[lane]]\nid = "1"\nsorce = "0"\n')
    with pytest.raises(OptionsError, match=r"each \[\[lane\]\] takes id, source and roi \(got id, sorce\)"):
        read_lanes_file(path)
    path.write_text("[[lane]\n")
    with pytest.raises(OptionsError, match="is not valid TOML"):
        read_lanes_file(path)
    with pytest.raises(OptionsError, match="cannot read the lanes file"):
        read_lanes_file(tmp_path / "missing.toml")


def test_lanes_need_distinct_ids():
    classifier = fake_classifier(["empty", "x"], lambda t: np.array([[1.0, 0.0]]))
    with pytest.raises(OptionsError, match="distinct ids"):
        MultiLanePipeline([Lane("1", ScriptedSource()), Lane("1", ScriptedSource())], classifier)


def test_lanes_take_fair_turns_on_one_model():
    """The model is the bottleneck (3 ms a frame, sources ready at once): every turn serves each
    lane one frame, so no lane runs ahead, and a lane that ends early leaves the other running."""

    def respond(tensor):
        time.sleep(0.003)
        return np.array([[1.0, 0.0]])

    classifier = fake_classifier(["empty", "x"], respond)
    order = []
    lanes = [
        Lane("1", ScriptedSource(per_open=(60,), fps=5000, live=False)),
        Lane("2", ScriptedSource(per_open=(20,), fps=5000, live=False)),
    ]
    options = PipelineOptions(checkout=CheckoutOptions(background_label="empty"), metrics_interval=0)
    metrics = MultiLanePipeline(lanes, classifier, [], options, on_frame=lambda r: order.append(r.lane)).run()
    assert order.count("1") == 60 and order.count("2") == 20
    assert metrics["1"].frames_processed == 60 and metrics["2"].frames_processed == 20
    lead = max(abs(order[:n].count("1") - order[:n].count("2")) for n in range(1, 40))
    assert lead <= 2, f"lane 1 ran {lead} frames ahead of lane 2 while both had frames: {order[:40]}"
    assert classifier.backend.calls == 80  # one model, every frame of both lanes


def test_two_lanes_in_one_process_keep_their_own_tray_basket_and_ids(tmp_path, capsys):
    """The demo video on two lanes of one kiosk: lane 1 watches the tray, lane 2 a corner where
    nothing is put down. Lane 1's basket is the video's, lane 2's is empty, and events carry their lane."""
    out = tmp_path / "events.jsonl"
    roi = ",".join(str(v) for v in ROI)
    code = cli.main(
        [
            "run",
            str(ASSETS / "classifier"),
            "--lane",
            f"1:{VIDEO}:{roi}",
            "--lane",
            f"2:{VIDEO}:0,300,100,60",
            "--jsonl",
            str(out),
            "--metrics-interval",
            "0",
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["label"] for e in events] == EXPECTED and {e["lane"] for e in events} == {"1"}
    err = capsys.readouterr().err
    assert "lane 1 basket: 2 x Banana" in err and "lane 2 basket: empty" in err
    assert "lane 1 pipeline:" in err and "lane 2 pipeline:" in err


def test_lanes_on_the_same_scene_give_each_lane_the_whole_basket_with_distinct_ids(tmp_path):
    path = tmp_path / "lanes.toml"
    path.write_text("".join(f'[[lane]]\nid = "{i}"\nsource = "{VIDEO}"\nroi = {list(ROI)}\n' for i in ("1", "2")))
    specs = read_lanes_file(path)
    baskets = [Basket(lane=spec.lane_id) for spec in specs]
    seen = []
    with tillsight.load(ASSETS / "classifier", throughput=True) as classifier:
        lanes = [Lane(spec.lane_id, open_source(spec.source), spec.roi) for spec in specs]
        MultiLanePipeline(lanes, classifier, [*baskets, seen.append], PipelineOptions(metrics_interval=0)).run()
    expected = {label: EXPECTED.count(label) for label in EXPECTED}
    assert [basket.items() for basket in baskets] == [expected, expected]
    assert len({event.event_id for event in seen}) == 2 * len(EXPECTED)
    assert sorted({event.lane for event in seen}) == ["1", "2"]


def test_run_takes_either_a_source_or_lanes(capsys):
    bundle = str(ASSETS / "classifier")
    assert cli.main(["run", bundle]) == 1
    assert "run needs a source" in capsys.readouterr().err
    assert cli.main(["run", bundle, "--source", VIDEO, "--lane", f"1:{VIDEO}"]) == 1
    assert "either --source" in capsys.readouterr().err
