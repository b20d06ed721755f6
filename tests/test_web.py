"""The monitor's HTTP side (ffstream/web, ffstream/prometheus.py), on a monitor worker in a thread.

Real sockets: workers' messages go over ZeroMQ into the monitor, the tests read them back over HTTP.
The whole stack, the page in Chromium included, is tests/test_dashboard.py.
"""

from __future__ import annotations

import io
import json
import socket as pysocket
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import zmq

from ffstream.config import Topology
from ffstream.monitor import preview
from ffstream.monitor.web.png import encode_png, mosaic
from ffstream.monitor.web.server import parse_address
from ffstream.net import wire
from ffstream.workers.monitor import MonitorWorker
from ffstream.monitor.stats import Histogram
from tests.processes import eventually
from tests.rig import running, unique

parser = pytest.importorskip("prometheus_client.parser")
Image = pytest.importorskip("PIL.Image")  # Pillow comes with matplotlib, in the test extra

LAYER_METRICS = {"kind": "layer", "layer": 2, "frames": 640, "fps": 310.5, "goodness_pos": 812.25, "goodness_neg": 120.5,
                 "p_pos": 0.93, "p_neg": 0.08, "threshold": 500.0, "updates": 10, "negative_updates": 9, "staleness": 1.5,
                 "weights_version": 19, "rollbacks": 0, "dropped": 2, "rejected": {"shape": 2}, "uptime_s": 12.0}


def sink_metrics(latencies: list[float]) -> dict:
    h = Histogram((0.01, 0.1, 1.0))
    for x in latencies:
        h.add(x)
    return {"kind": "sink", "frames": len(latencies), "fps": 50.0, "accuracy": 0.75, "accuracy_recent": 0.8, "evaluated": 4,
            "dropped": 0, "latency_histogram_s": h.get()}


@pytest.fixture
def monitor(zmq_context, socket):
    """A monitor worker with HTTP on a free port, and an XPUB that publishes into it once it has subscribed."""
    collect = unique("mon-collect")
    worker = MonitorWorker(collect, unique("mon-pub"), "http://127.0.0.1:0", context=zmq_context)
    with running(worker):
        pub = socket(zmq.XPUB)
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.SNDTIMEO, 5000)
        pub.connect(collect)
        eventually(lambda: pub.poll(0) and pub.recv() == b"\x01", what="the monitor's subscription")  # the handshake
        worker.pub = pub
        yield worker


def publish(worker: MonitorWorker, kind: str, stream: str, array=None, **extra) -> None:
    array = np.zeros(0, np.float32) if array is None else array
    worker.pub.send_multipart(wire.encode(wire.Message(kind, array, stream=stream, extra=extra)))


def get(worker: MonitorWorker, path: str, headers: dict | None = None, timeout: float = 5.0):
    return urllib.request.urlopen(urllib.request.Request(worker.web.url + path.lstrip("/"), headers=headers or {}), timeout=timeout)


def families(text: str) -> dict:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def test_metrics_endpoint_parses_with_prometheus_client(monitor):
    publish(monitor, "metrics", "layer2", metrics=LAYER_METRICS)
    publish(monitor, "metrics", "sink", metrics=sink_metrics([0.005, 0.05, 0.05, 0.5, 3.0]))
    publish(monitor, "metrics", 'odd "name"\n', metrics={"kind": "source", "frames": 7, "dropped": 1})
    eventually(lambda: len(monitor.latest) >= 3, what="three workers' metrics at the monitor")
    response = get(monitor, "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.read().decode()
    fams = families(text)
    for name, kind in (("ffstream_layer_goodness", "gauge"), ("ffstream_frames", "counter"), ("ffstream_frames_dropped", "counter"),
                       ("ffstream_latency_seconds", "histogram"), ("ffstream_layer_p_positive", "gauge"), ("ffstream_accuracy", "gauge")):
        assert fams[name].type == kind, (name, fams[name].type)
        assert fams[name].documentation, f"{name} has no HELP line"
    goodness = {(s.labels["layer"], s.labels["phase"]): s.value for s in fams["ffstream_layer_goodness"].samples}
    assert goodness == {("2", "pos"): 812.25, ("2", "neg"): 120.5}
    frames = {s.labels["worker"]: s.value for s in fams["ffstream_frames"].samples if s.name == "ffstream_frames_total"}
    assert frames == {"layer2": 640, "sink": 5, 'odd "name"\n': 7}  # a label value with quotes and a newline survives escaping
    hist = {(s.name, s.labels.get("le")): s.value for s in fams["ffstream_latency_seconds"].samples}
    assert [hist[("ffstream_latency_seconds_bucket", le)] for le in ("0.01", "0.1", "1.0", "+Inf")] == [1, 3, 4, 5]
    assert hist[("ffstream_latency_seconds_count", None)] == 5
    assert hist[("ffstream_latency_seconds_sum", None)] == pytest.approx(3.605)
    rejected = {(s.labels["worker"], s.labels["reason"]): s.value for s in fams["ffstream_messages_rejected"].samples if s.name.endswith("_total")}
    assert rejected == {("layer2", "shape"): 2}


def test_a_broken_histogram_is_left_out(monitor):
    broken = sink_metrics([0.05])
    broken["latency_histogram_s"]["counts"] = [1, 0, 1]  # cumulative counts may never fall
    publish(monitor, "metrics", "sink", metrics=broken)
    eventually(lambda: "sink" in monitor.latest, what="the sink's metrics")
    fams = families(get(monitor, "/metrics").read().decode())
    assert "ffstream_latency_seconds" not in fams
    assert {s.value for s in fams["ffstream_accuracy"].samples} == {0.75, 0.8}


def test_receptive_fields_png_and_bad_previews(monitor):
    with pytest.raises(urllib.error.HTTPError) as missing:
        get(monitor, "/receptive-fields.png")
    assert missing.value.code == 404
    tiles = preview.weight_tiles(np.random.default_rng(0).standard_normal((10, 3 * 5 * 4)).astype(np.float32), (3, 5, 4))
    for bad in (tiles.astype(np.float32), tiles[:, :, :, :2], np.zeros((0, 5, 4), np.uint8)):  # not uint8, not RGB, empty
        publish(monitor, "preview", "layer1", np.ascontiguousarray(bad), layer=1)
    publish(monitor, "metrics", "layer1", np.ones(3, np.float32), metrics={"frames": 1})  # metrics carry no payload
    eventually(lambda: monitor.dropped["preview"] == 3 and monitor.dropped["payload"] == 1, what="the bad messages to be counted")
    publish(monitor, "preview", "layer1", tiles, layer=1, weights_version=7, units=500)
    eventually(lambda: monitor.previews == 1, what="the preview")
    png = get(monitor, "/receptive-fields.png").read()
    width, height, depth, color = png_header(png)
    assert (width, height, depth, color) == (4 * 4 + 3, 3 * 5 + 2, 8, 2)  # 10 tiles: 4 columns × 3 rows, 1-pixel gaps, RGB
    assert decode_png(png).shape == mosaic(tiles).shape
    np.testing.assert_array_equal(decode_png(png), mosaic(tiles))


def test_event_stream_replays_history_then_resumes_after_last_event_id(monitor):
    for i in range(3):
        publish(monitor, "metrics", "layer1", metrics={"kind": "layer", "layer": 1, "frames": i})
    eventually(lambda: monitor.latest.get("layer1", {}).get("frames") == 2, what="three metrics messages")
    with get(monitor, "/events") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        events = read_events(stream, lambda evs: sum(e["event"] == "metrics" and e["data"].get("worker") == "layer1" for e in evs) == 3)
    mine = [e for e in events if e["data"].get("worker") == "layer1"]
    assert [e["data"]["frames"] for e in mine] == [0, 1, 2]
    last = int(mine[1]["id"])
    with get(monitor, "/events", headers={"Last-Event-ID": str(last)}) as stream:
        resumed = read_events(stream, lambda evs: any(e["data"].get("worker") == "layer1" for e in evs))
    assert [e["data"]["frames"] for e in resumed if e["data"].get("worker") == "layer1"] == [2]
    assert all(int(e["id"]) > last for e in resumed)


def test_page_and_assets_are_served_from_the_package(monitor):
    page = get(monitor, "/").read().decode()
    assert '<script src="/static/dashboard.js">' in page and "https://" not in page  # nothing from a CDN
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = get(monitor, f"/static/{name}")
        assert response.headers["Content-Type"].startswith(kind)
        assert b"https://" not in response.read()
    for path in ("/static/../board.py", "/static/%2e%2e/board.py", "/nothing"):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(monitor, path)
        assert err.value.code == 404, path


def test_a_taken_port_leaves_the_monitor_running_without_http(zmq_context):
    taken = pysocket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        worker = MonitorWorker(unique("c"), unique("p"), f"http://127.0.0.1:{port}", context=zmq_context)
        with running(worker):
            eventually(lambda: hasattr(worker, "poller"), what="the monitor's setup")
            assert worker.web is None
            assert f"127.0.0.1:{port}" in worker.metrics()["http_error"]
    finally:
        taken.close()


def test_http_addresses():
    assert parse_address("http://127.0.0.1:5572") == ("127.0.0.1", 5572)
    assert parse_address("http://*:5772/") == ("", 5772)  # every interface
    assert parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    with pytest.raises(ValueError):
        parse_address("tcp://127.0.0.1:5572")
    assert Topology(bind_host="*").bind("http://monitor:5772") == "http://*:5772"
    assert Topology().bind("http://monitor:5772") == "http://monitor:5772"


def test_weight_tiles_contrast_and_size_cap():
    w = np.zeros((3, 4), np.float32)
    w[0] = [1, -1, 0.5, 0]
    w[1] = [0.001, 0, 0, 0]  # small weights still get the full contrast of their own tile
    tiles = preview.weight_tiles(w, (1, 2, 2))
    assert tiles.dtype == np.uint8 and tiles.shape == (3, 2, 2)
    assert tiles[0].ravel().tolist() == [255, 1, 192, 128]
    assert tiles[1].ravel().tolist() == [255, 128, 128, 128]
    assert (tiles[2] == 128).all()  # all-zero weights: mid grey, no division by zero
    big = preview.weight_tiles(np.ones((64, 3 * 100 * 100), np.float32), (3, 100, 100))
    assert big.nbytes <= preview.MAX_BYTES and big.shape[1:] == (100, 100, 3)
    with pytest.raises(ValueError):
        preview.weight_tiles(np.ones((4, 10), np.float32), (1, 2, 2))


# --- helpers ------------------------------------------------------------------------------------------------
def read_events(stream, done, limit: int = 500) -> list[dict]:
    """Server-Sent Events off an open response until done(events) holds (the socket's timeout fails the test)."""
    events, current = [], {}
    for _ in range(10000):
        line = stream.readline().decode().rstrip("\n")
        if line.startswith(("id:", "event:", "data:")):
            key, _, value = line.partition(":")
            current[key] = json.loads(value) if key == "data" else value.strip()
        elif line == "" and current:
            if "data" in current:
                events.append(current)
                if done(events) or len(events) >= limit:
                    return events
            current = {}
    pytest.fail("the event stream never delivered what was expected")


def png_header(png: bytes) -> tuple[int, int, int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = struct.unpack(">IIBB", png[16:26])
    return width, height, depth, color


def decode_png(png: bytes) -> np.ndarray:
    """PNG bytes -> (H, W) grey or (H, W, 3) RGB, read by Pillow: a decoder other than the OpenCV that encoded it."""
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.dtype == np.uint8
    return image


def test_png_round_trip_grey():
    image = np.arange(35, dtype=np.uint8).reshape(5, 7)
    np.testing.assert_array_equal(decode_png(encode_png(image)), image)
