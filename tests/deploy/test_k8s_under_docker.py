"""deploy/k8s's configuration run, not only validated: the rendered cpu overlay's workloads as Docker containers.

    pytest tests/deploy/test_k8s_under_docker.py -s     (in the default run beside the compose test: about 40 s)

The overlay is rendered as tests/test_deploy.py renders it (kubectl kustomize, or its small renderer), with CURVE
keys made for its Secret as the k8s README says. Each workload then runs as a container of the same image, with
the manifests' args, environment, Secret files, user, limits and readiness probe (tests/deploy/k8sdocker.py), on
one Docker network where the Services' names resolve. Only the stream is changed, to a finite one, so that it ends:
every service must turn ready, and every frame must reach the sink, over CURVE between the containers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
from dockerstack import Metrics, Unavailable, build_image, docker_usable, wait_until
from k8sdocker import by_kind, pods

from ffstream.net import security
from tests.manifests import K8S, kustomize

pytestmark = pytest.mark.compose

IMAGE = os.environ.get("FFSTREAM_IMAGE", "ffstream:cpu")
FRAMES = 3000  # a short synthetic stream
CHANGED = {"FFSTREAM_STREAM_SOURCE": f"synthetic:{FRAMES}"}  # the only change to the manifests: a stream that ends
READY_S = 240  # every pod ready (its readiness probe), 2-core machine shared with other work
END_S = 300


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["docker", *args], check=False, capture_output=True, text=True, timeout=120)
    assert not check or out.returncode == 0, f"docker {' '.join(args)}: {out.stderr[-2000:]}"
    return out


def test_the_cpu_overlay_runs_under_docker_and_streams_to_its_end(tmp_path):
    try:
        docker_usable()
        build_image(IMAGE)
    except Unavailable as exc:
        pytest.skip(f"kubernetes under docker: {exc}")
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s, ignore=shutil.ignore_patterns("keys"))
    keys = k8s / "base" / "keys"
    security.generate(keys)
    docs = kustomize(k8s / "overlays" / "cpu")
    (config,) = by_kind(docs, "ConfigMap").values()
    config["data"].update(CHANGED)
    for doc in docs:
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert c["image"].split(":")[0].rsplit("/", 1)[-1] == "ffstream", c["image"]  # the image the test built stands in
    workloads = pods(docs, tmp_path / "volumes")
    assert {p.name for p in workloads} == {"monitor", "sink", "layer1", "layer2", "layer3", "layer4", "sleep", "source"}

    prefix = f"ffk8s{uuid.uuid4().hex[:8]}-"
    network = f"{prefix}net"
    docker("network", "create", network)
    report: dict = {}
    metrics = None
    try:
        t0 = time.monotonic()
        for pod in workloads:
            docker(*pod.run_argv(IMAGE, network, prefix)[1:])
        state = lambda name: json.loads(docker("inspect", f"{prefix}{name}").stdout)[0]["State"]
        health = lambda name: state(name).get("Health", {}).get("Status", state(name)["Status"])
        unready = lambda: {p.name: health(p.name) for p in workloads if health(p.name) != "healthy" and not (p.name == "sink" and state("sink")["Status"] == "exited")}
        def logs(name: str) -> str:
            out = docker("logs", "--tail", "30", f"{prefix}{name}", check=False)
            return (out.stdout + out.stderr)[-3000:]
        wait_until("every pod ready", lambda: not unready(), READY_S, lambda: f"{unready()}\n{logs('source')}")
        report["run to all ready (s)"] = round(time.monotonic() - t0, 1)

        # The host as a viewer: CURVE with the viewer's key to the monitor's address on the network.
        monitor_ip = json.loads(docker("inspect", f"{prefix}monitor").stdout)[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
        metrics = Metrics(f"tcp://{monitor_ip}:5770", str(keys))
        wait_until("the sink exits at the end of the stream", lambda: state("sink")["Status"] == "exited", END_S,
                   lambda: f"{metrics.frames()}\n{logs('sink')}\n{logs('source')}")
        report["run to the sink's end (s)"] = round(time.monotonic() - t0, 1)
        assert state("sink")["ExitCode"] == 0, logs("sink")
        wait_until("the source reports the end", lambda: metrics.latest.get("source", {}).get("ended"), 30, lambda: metrics.latest.get("source"))
        frames = report["frames per worker"] = metrics.frames()
        assert frames["source"] == FRAMES, frames
        assert frames["sink"] == FRAMES, frames  # nothing lost: no fault here
        assert all(m.get("auth_refused", 0) == 0 for m in metrics.latest.values()), metrics.latest
        for pod in workloads:
            if pod.name != "sink":
                assert state(pod.name)["Status"] == "running", f"{pod.name}: {logs(pod.name)}"
    finally:
        print("\nkubernetes under docker measured:", json.dumps(report, indent=1))
        if metrics is not None:
            metrics.close()
        for pod in workloads:
            docker("rm", "-f", "-v", f"{prefix}{pod.name}", check=False)
        docker("network", "rm", network, check=False)
