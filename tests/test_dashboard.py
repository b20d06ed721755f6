"""The monitor's web dashboard and /metrics over a real `ffstream run` on a real video, the page in headless Chromium.

One stack serves the whole module (starting one costs six torch imports on a shared machine). The
screenshot goes to tests/artifacts/dashboard.png (FFSTREAM_ARTIFACTS to change); the test prints its path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from ffstream.net import wire
from tests.processes import ROOT, env, eventually

parser = pytest.importorskip("prometheus_client.parser")

VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver; Selenium Manager must never download one
START_S = 180.0  # six workers import torch on a shared 2-core machine, then the first frames reach the sink
LAYERS = 2
SCRAPE_INTERVAL_S = 0.5  # between two scrapes of /metrics while waiting
LINE_PIXELS = 200  # a chart with its lines drawn (passing runs: 667-2427 per chart), not only its legend (about 60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`ffstream run` on vtest.avi (the synthetic clip without it), HTTP on a free port; yields the dashboard URL."""
    tmp = tmp_path_factory.mktemp("dashboard")
    source = ["--source", str(VIDEO), "--epochs", "50"] if VIDEO.exists() else ["--source", "synthetic:500000"]
    monitor = f"ipc://{tmp}/monitor"
    log = open(tmp / "run.log", "wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "ffstream", "run", *source, "--set", "model.layers=64,32", "--monitor", monitor, "--http", "http://127.0.0.1:0",
         "--no-progress", "--set", "threads=1"],
        stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT,
    )
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(monitor)
    try:
        # The monitor says where it serves HTTP (port 0 took a free one) in its own metrics; wait for that and for
        # frames at the sink, so that every chart has something to draw.
        seen: dict[str, dict] = {}
        deadline = time.monotonic() + START_S
        while not (seen.get("monitor", {}).get("http") and seen.get("sink", {}).get("frames", 0) > 0):
            assert run.poll() is None, f"ffstream run exited with {run.returncode}: {(tmp / 'run.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no dashboard after {START_S} s; heard from {sorted(seen)}"
            if sub.poll(500):
                msg = wire.decode(sub.recv_multipart(), max_payload=0)
                seen[msg.stream] = msg.extra["metrics"]
        yield seen["monitor"]["http"]
    finally:
        sub.close(linger=0)
        ctx.term()
        run.send_signal(signal.SIGINT)  # as Ctrl-C: every worker drains and stops
        try:
            code = run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            code = run.wait()
        log.close()
    assert code == 0, (tmp / "run.log").read_text()[-2000:]


def scrape(url: str) -> dict:
    text = urllib.request.urlopen(url + "metrics", timeout=10).read().decode()
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def sample(families: dict, name: str, sample_name: str, **labels) -> float | None:
    for s in families[name].samples if name in families else []:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def goodness_labels(families: dict) -> set[tuple[str, str]]:
    """(layer, phase) of every goodness sample scraped."""
    return {(s.labels["layer"], s.labels["phase"]) for s in families["ffstream_layer_goodness"].samples} if "ffstream_layer_goodness" in families else set()


def test_metrics_scrape_of_a_running_stack(stack):
    families: dict = {}

    def every_layer_and_phase_scraped() -> bool:  # negatives (and their goodness) come once the sleep worker has a snapshot
        families.clear()
        families.update(scrape(stack))
        return len(goodness_labels(families)) == 2 * LAYERS and bool(sample(families, "ffstream_latency_seconds", "ffstream_latency_seconds_count"))

    eventually(every_layer_and_phase_scraped, 60, "goodness of every layer in both phases, and a latency sample", interval=SCRAPE_INTERVAL_S)
    goodness = goodness_labels(families)
    assert goodness == {(str(i), phase) for i in range(1, LAYERS + 1) for phase in ("pos", "neg")}
    for name, kind in (("ffstream_layer_goodness", "gauge"), ("ffstream_frames", "counter"), ("ffstream_frames_dropped", "counter"),
                       ("ffstream_latency_seconds", "histogram"), ("ffstream_layer_p_positive", "gauge"), ("ffstream_sleep_staleness", "gauge")):
        assert families[name].type == kind and families[name].documentation, name
    buckets = [(s.labels["le"], s.value) for s in families["ffstream_latency_seconds"].samples if s.name.endswith("_bucket")]
    counts = [v for _, v in buckets]
    assert buckets[-1][0] == "+Inf" and counts == sorted(counts)  # cumulative
    count = sample(families, "ffstream_latency_seconds", "ffstream_latency_seconds_count")
    assert counts[-1] == count > 0
    assert sample(families, "ffstream_latency_seconds", "ffstream_latency_seconds_sum") > 0
    assert sample(families, "ffstream_frames_dropped", "ffstream_frames_dropped_total", worker="source") == 0  # a file never drops
    # The stack is live: the sink's frame counter grows between two scrapes.
    first = sample(families, "ffstream_frames", "ffstream_frames_total", worker="sink")
    eventually(lambda: sample(scrape(stack), "ffstream_frames", "ffstream_frames_total", worker="sink") > first, 60,
               "the sink's frame count to grow", interval=SCRAPE_INTERVAL_S)


@pytest.mark.skipif(CHROMIUM is None or not Path(CHROMEDRIVER).exists(),
                    reason="headless Chromium is not installed (apt-get install chromium chromium-driver)")
def test_dashboard_in_headless_chromium(stack):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1250"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # a given driver: no Selenium Manager
    try:
        driver.get(stack)
        wait = WebDriverWait(driver, 60, poll_frequency=0.25)
        points = lambda: int(driver.find_element("id", "points").get_attribute("data-points"))  # noqa: E731
        wait.until(lambda _: points() >= 10)  # the history, replayed at connect, and live messages
        before = points()
        wait.until(lambda _: points() > before + 3)  # new metrics keep arriving while the stack runs
        wait.until(lambda _: driver.execute_script("return document.querySelectorAll('#goodness canvas').length") == LAYERS)
        wait.until(lambda _: driver.execute_script(
            "const i = document.getElementById('receptive-fields'); return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0"))
        # The charts draw lines, not just axes: on every layer's chart, count the pixels in the positive or the
        # negative goodness colour. Both together: twice only the legend's 33 positive pixels were seen, most
        # likely because layer 1 did not yet tell frames from hybrids and the negative line, drawn last, covered
        # the positive one.
        line_pixels = lambda: driver.execute_script("""
            return [...document.querySelectorAll('#goodness canvas')].map(c => {
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < d.length; i += 4) {
                const pos = d[i] === 0x1f && d[i + 1] === 0x77 && d[i + 2] === 0xb4, neg = d[i] === 0xe4 && d[i + 1] === 0x57 && d[i + 2] === 0x2e;
                if (pos || neg) n++;
              }
              return n;
            });""")  # noqa: E731
        try:
            wait.until(lambda _: min(line_pixels()) > LINE_PIXELS)
        except TimeoutException:
            pytest.fail(f"goodness charts' line pixels per layer after 60 s: {line_pixels()}; want > {LINE_PIXELS} (the legend alone has about 60)")
        assert driver.find_element("id", "status").text == "live"
        rows = driver.execute_script("return [...document.querySelectorAll('#workers tbody tr td:first-child')].map(td => td.textContent)")
        assert {"source", "layer1", "layer2", "sleep", "sink", "monitor"} <= set(rows), rows
        wait.until(lambda _: points() > before + 6)  # a few more seconds of history in the screenshot
        artifacts = Path(os.environ.get("FFSTREAM_ARTIFACTS", ROOT / "tests" / "artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "dashboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"\ndashboard screenshot: {shot}")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()
