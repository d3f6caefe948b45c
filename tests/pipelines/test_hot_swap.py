"""A new bundle on a running kiosk: the demo video with the shipped int8 classifier, swapped mid-run."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from tillsight.demo import ASSETS, demo_script
from tillsight.errors import BundleError, OptionsError
from tillsight.kiosk import Kiosk, KioskOptions
from tillsight.pipelines import CheckoutOptions, PipelineOptions
from tillsight.pipelines.events import ProductRecognized

SCRIPT = demo_script()
VIDEO = str(ASSETS / SCRIPT.video)
BUNDLE = ASSETS / "classifier"


def _options(**extra) -> KioskOptions:
    pipeline = PipelineOptions(checkout=CheckoutOptions(roi=SCRIPT.roi), metrics_interval=0)
    return KioskOptions(BUNDLE, source=VIDEO, pipeline=pipeline, fps=SCRIPT.fps, version="v1", **extra)


def _run_swapping(new_bundle: Path, at_frame: int, **swap):
    """Run the demo video; when the pipeline reaches ``at_frame``, swap ``new_bundle`` in from another thread."""
    events, reached, outcome = [], threading.Event(), {}

    def on_frame(result):
        if result.frame.frame_id >= at_frame:
            reached.set()

    kiosk = Kiosk(_options(), sinks=[events.append], on_frame=on_frame)

    def swapper():
        reached.wait(60)
        try:
            outcome["report"] = kiosk.swap_bundle(new_bundle, **swap)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=swapper)
    thread.start()
    result = kiosk.run()
    thread.join(60)
    return events, result, outcome, kiosk


@pytest.fixture(scope="module")
def unswapped_events():
    events = []
    result = Kiosk(_options(), sinks=[events.append]).run()
    assert result.metrics[""].frames_processed == SCRIPT.frames
    return events


def test_a_bundle_swapped_mid_run_loses_no_frame_and_no_event_and_events_name_their_bundle(tmp_path, unswapped_events):
    new_bundle = tmp_path / "v2"
    shutil.copytree(BUNDLE, new_bundle)
    events, result, outcome, kiosk = _run_swapping(new_bundle, at_frame=250, version="v2")

    report = outcome["report"]
    assert report.old_version == "v1" and report.new_version == "v2" and report.load_s > 0
    metrics = result.metrics[""]
    assert metrics.frames_processed == SCRIPT.frames and metrics.frames_dropped == 0
    # the same items, each reported once, as without the swap (event ids name the item's arrival)
    assert [(e.event_id, getattr(e, "label", None)) for e in events] == [
        (e.event_id, getattr(e, "label", None)) for e in unswapped_events
    ]
    versions = [event.bundle_version for event in events]
    assert versions == sorted(versions) and {"v1", "v2"} <= set(versions), versions  # v1 until the swap, v2 after
    sha256 = json.loads((BUNDLE / "manifest.json").read_text())["artifacts"]["model.tflite"]["sha256"]
    assert all(event.model_sha256 == sha256 for event in events)
    assert isinstance(events[0], ProductRecognized) and events[0].to_dict()["bundle_version"] == "v1"
    assert kiosk.version == "v2"


def test_a_bundle_that_does_not_verify_is_refused_and_the_running_one_goes_on(tmp_path, unswapped_events):
    broken = tmp_path / "broken"
    shutil.copytree(BUNDLE, broken)
    model = broken / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))

    events, result, outcome, kiosk = _run_swapping(broken, at_frame=250, version="v2")
    assert isinstance(outcome["error"], BundleError) and "does not match its manifest" in str(outcome["error"])
    assert [event.bundle_version for event in events] == ["v1"] * len(unswapped_events)
    assert result.metrics[""].frames_processed == SCRIPT.frames and kiosk.version == "v1"


def test_a_bundle_without_the_lane_background_label_is_refused_before_the_switch(tmp_path):
    pipeline = PipelineOptions(checkout=CheckoutOptions(roi=SCRIPT.roi, background_label="Banana"), metrics_interval=0)
    relabeled = tmp_path / "relabeled"
    shutil.copytree(BUNDLE, relabeled)
    manifest = json.loads((relabeled / "manifest.json").read_text())
    manifest["labels"] = [label.replace("Banana", "Plantain") for label in manifest["labels"]]
    (relabeled / "manifest.json").write_text(json.dumps(manifest))
    kiosk = Kiosk(KioskOptions(BUNDLE, source=VIDEO, pipeline=pipeline, fps=SCRIPT.fps))
    try:
        with pytest.raises(OptionsError, match="background_label 'Banana' is not a label of the model"):
            kiosk.swap_bundle(relabeled)
        assert "Banana" in kiosk.classifier.labels and kiosk.pipeline.classifier is kiosk.classifier
    finally:
        kiosk.close()


def test_a_multi_lane_kiosk_swaps_for_every_lane_at_once(tmp_path):
    """Two lanes on one model: one swap, both lanes' events name the new bundle after it, every item once per lane."""
    from tillsight.pipelines.lanes import LaneSpec

    new_bundle = tmp_path / "v2"
    shutil.copytree(BUNDLE, new_bundle)
    pipeline = PipelineOptions(checkout=CheckoutOptions(roi=SCRIPT.roi), metrics_interval=0)
    lanes = (LaneSpec("1", VIDEO), LaneSpec("2", VIDEO))
    events, reached = [], threading.Event()
    kiosk = Kiosk(
        KioskOptions(BUNDLE, lanes=lanes, pipeline=pipeline, fps=SCRIPT.fps, version="v1"),
        sinks=[events.append],
        on_frame=lambda result: result.frame.frame_id >= 250 and reached.set(),
    )
    thread = threading.Thread(target=lambda: reached.wait(60) and kiosk.swap_bundle(new_bundle, "v2"))
    thread.start()
    result = kiosk.run()
    thread.join(60)
    expected = [placement.label for placement in SCRIPT.placements]
    for lane in ("1", "2"):
        mine = [event for event in events if event.lane == lane]
        assert [event.label for event in mine] == expected and result.metrics[lane].frames_processed == SCRIPT.frames
        versions = [event.bundle_version for event in mine]
        assert versions == sorted(versions) and versions[0] == "v1" and versions[-1] == "v2", (lane, versions)
