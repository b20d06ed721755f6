"""Live novelty on the monitor's web page and /metrics: a real sink worker scores frames and alerts, a real monitor
worker serves them over HTTP, and the page is read over SSE and drawn in headless Chromium.

The frames' goodness is made up (the sink's trace of each message, as the layers would write it): 160 ordinary frames,
then 8 unlike them (an alert at the third), then 32 ordinary ones, at 8 frames a message.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zmq

from ffstream.net import wire
from ffstream.workers.monitor import MonitorWorker
from ffstream.monitor.novelty import NoveltyMeter
from ffstream.workers.sink import SinkWorker
from tests.processes import ROOT, eventually
from tests.rig import running, send, unique

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver; Selenium Manager must never download one
ROWS = 8
LAYERS = 3
ALERT_FRAME = 162  # frames 160.. are unusual; alert_frames=3 fires at the third


def goodness() -> np.ndarray:
    """(200, 3): ordinary frames, each layer around its own level, then 8 with every layer far below it, then ordinary."""
    rng = np.random.default_rng(1)
    ordinary = lambda n: rng.normal([500.0, 300.0, 80.0], [20.0, 5.0, 1.0], (n, LAYERS))  # noqa: E731
    return np.concatenate([ordinary(160), np.tile([[420.0, 280.0, 70.0]], (8, 1)), ordinary(32)])


@pytest.fixture
def served(zmq_context, socket):
    """A monitor with HTTP on a free port and a sink publishing its metrics into it; the frames fed once the monitor
    has heard the sink (so the alert, sent once, cannot be lost to a slow join). Yields (monitor, sink)."""
    collect = unique("mon-collect")
    monitor = MonitorWorker(collect, unique("mon-pub"), "http://127.0.0.1:0", context=zmq_context)
    addr = unique("sink")
    sink = SinkWorker(addr, readout_layers=[2], novelty=NoveltyMeter(window=300, warmup=64, threshold=3.0, alert_frames=3),
                      context=zmq_context, metrics_addr=collect, metrics_interval=0.05)
    feeder = socket(zmq.PUSH)
    feeder.setsockopt(zmq.SNDTIMEO, 5000)
    feeder.connect(addr)
    with running(monitor), running(sink):
        eventually(lambda: "sink" in monitor.latest, timeout=30, what="the sink's first metrics at the monitor")
        g = goodness()
        for seq in range(len(g) // ROWS):
            send(feeder, wire.Message("activity", np.ones((ROWS, 4), np.float32), seq=seq,
                                      trace=g[seq * ROWS : (seq + 1) * ROWS].T.round(4).tolist()))
            # Each batch waits for the monitor to hear the sink count it: the chart gets a history, not one point.
            eventually(lambda: monitor.latest["sink"].get("frames", 0) >= (seq + 1) * ROWS, timeout=30, what=f"batch {seq} at the monitor")
        eventually(lambda: sink.frames == 200 and monitor.latest["sink"].get("frames") == 200, timeout=30, what="every frame at the sink")
        yield monitor, sink


def test_per_layer_novelty_and_the_alert_reach_metrics_and_the_event_stream(served):
    monitor, sink = served
    assert sink.novelty.alerts == 1
    latest = monitor.latest["sink"]  # the sink's metrics as the monitor last heard them
    assert len(latest["novelty_layers"]) == LAYERS and latest["novelty_threshold"] == 3.0
    assert np.isclose(max(latest["novelty_layers"]), latest["novelty"], atol=1e-3)  # the largest layer is the score
    # Each metrics message names the most novel frame since the one before: the spike shows though it fell between two
    peaks = [m["novelty_peak"] for e in monitor.board.events_after(0, 0) if e.name == "metrics"
             and (m := json.loads(e.data))["worker"] == "sink" and m.get("novelty_peak") is not None]
    assert max(peaks) > 3.0 and len(peaks) >= 2, peaks
    assert latest["novelty_last_alert"]["frame"] == ALERT_FRAME and len(latest["novelty_last_alert"]["layers"]) == LAYERS
    text = urllib.request.urlopen(monitor.web.url + "metrics", timeout=5).read().decode()
    for layer in range(1, LAYERS + 1):
        assert f'ffstream_layer_novelty{{layer="{layer}"}}' in text
    with urllib.request.urlopen(monitor.web.url + "events", timeout=10) as stream:
        alerts = []
        for _ in range(20_000):  # the history, replayed at connect, holds the alert
            line = stream.readline().decode()
            if line.startswith("event: alert"):
                alerts.append(json.loads(stream.readline().decode().partition(":")[2]))
                break
    assert alerts and alerts[0]["frame"] == ALERT_FRAME and alerts[0]["novelty"] > 3 and alerts[0]["worker"] == "sink"


@pytest.mark.skipif(CHROMIUM is None or not Path(CHROMEDRIVER).exists(),
                    reason="headless Chromium is not installed (apt-get install chromium chromium-driver)")
def test_the_page_draws_novelty_per_layer_and_lists_the_alert(served):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    monitor, _ = served
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(monitor.web.url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.25)
        wait.until(lambda _: driver.execute_script("return document.getElementById('alerts').children.length") == 1)
        assert f"frame {ALERT_FRAME}" in driver.find_element("id", "alerts").text
        # Pixels of each layer's colour (the palette's first three), and of the alert's red (its bar and the threshold)
        colours = lambda: driver.execute_script("""
            const c = document.getElementById('novelty'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const want = {layer1: [0x1f, 0x77, 0xb4], layer2: [0xe4, 0x57, 0x2e], layer3: [0x2c, 0xa0, 0x2c], alert: [0xd6, 0x27, 0x28]};
            const n = {layer1: 0, layer2: 0, layer3: 0, alert: 0};
            for (let i = 0; i < d.length; i += 4)
              for (const [k, [r, g, b]] of Object.entries(want)) if (d[i] === r && d[i + 1] === g && d[i + 2] === b) n[k]++;
            return n;""")  # noqa: E731
        try:  # more than a legend's key: lines and the alert bar are drawn (the page redraws every 0.5 s)
            wait.until(lambda _: min(colours().values()) > 30)
        except TimeoutException:
            pytest.fail(f"novelty chart's pixels per colour after 60 s: {colours()}; want > 30 each")
        assert "alerts this run" in driver.find_element("id", "novelty-note").text
        artifacts = Path(os.environ.get("FFSTREAM_ARTIFACTS", ROOT / "tests" / "artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        card = driver.find_element("id", "card-novelty")
        assert card.screenshot(str(artifacts / "novelty.png"))
        print(f"\nnovelty card screenshot: {artifacts / 'novelty.png'}")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()
