"""MQTT without a broker: the outbox file (one process at a time), URLs, and a broker that does not answer."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tillsight import cli
from tillsight.demo import ASSETS
from tillsight.errors import OptionsError, SinkError
from tillsight.pipelines.mqtt import MqttOptions
from tillsight.pipelines.outbox import Outbox

HOLD = textwrap.dedent("""
    import sys, time
    from tillsight.pipelines.outbox import Outbox
    outbox = Outbox(sys.argv[1])
    outbox.put("a", "t", b"1")
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_second_process_on_one_outbox_is_refused_in_one_line_and_the_file_frees_when_it_ends(tmp_path):
    """Two processes given one outbox file: the second reported the first's events as its own."""
    path = tmp_path / "outbox.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SinkError, match=rf"outbox {path} is in use by process {holder.pid}; give each kiosk process its own"):
            Outbox(path)
    finally:
        holder.kill()  # as a power cut or kill -9 would: the OS lets go of the lock
        holder.wait()
    outbox = Outbox(path)
    assert len(outbox) == 1  # the event the killed process stored is there for the next one
    with pytest.raises(SinkError, match="in use by process"):  # in one process too
        Outbox(path)
    outbox.close()
    Outbox(path).close()


def test_an_unreachable_broker_is_said_within_seconds_while_events_wait_in_the_outbox(tmp_path, caplog):
    """It was mentioned only at the end of the run."""
    import logging
    import time

    pytest.importorskip("paho.mqtt", reason='MQTT needs paho-mqtt: pip install "tillsight[mqtt]"')
    from tillsight.pipelines.events import ProductRecognized
    from tillsight.pipelines.mqtt import UNREACHABLE_WARNING_S, MqttOptions, MqttSink

    from .broker import free_port

    port = free_port()  # nothing listens there
    sink = MqttSink(MqttOptions.from_url(f"mqtt://127.0.0.1:{port}/store/events", outbox=tmp_path / "outbox.db"))
    try:
        with caplog.at_level(logging.WARNING, logger="tillsight.pipelines.mqtt"):
            sink(ProductRecognized("Banana", 0.9, 1.0, 1.5, 5, "lane-1"))
            time.sleep(UNREACHABLE_WARNING_S + 1.0)
        said = [r.getMessage() for r in caplog.records if "has not answered" in r.getMessage()]
        assert said == [
            f"MQTT broker mqtt://127.0.0.1:{port}/store/events has not answered in 3 s; events wait in the outbox {tmp_path / 'outbox.db'} "
            "(1 so far) and go out once it does"
        ]
    finally:
        sink.close(timeout=0.1)


def test_a_malformed_mqtt_url_is_one_line_naming_the_form(capsys):
    code = cli.main(["run", str(ASSETS / "classifier"), "--source", str(ASSETS / "checkout.mp4"), "--mqtt", "http://broker/x"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: 'http://broker/x' is not an MQTT URL; write mqtt://HOST[:PORT]/TOPIC or mqtts://..."
    ]
    with pytest.raises(OptionsError, match="wildcards"):
        MqttOptions.from_url("mqtt://broker/store/#")
    with pytest.raises(OptionsError, match="port"):
        MqttOptions.from_url("mqtt://broker:99999/x")
