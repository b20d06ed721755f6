"""The deployment files: docker-compose validates and *runs* (as local processes), Kubernetes manifests validate.

The compose test runs the compose file's services with every port it names (5710-5772, see docker-compose.yml)
moved to a free one, so that it passes while another ffstream, or anything else, holds those ports.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from ffstream.net import security, wire
from tests.manifests import K8S, kustomize
from tests.processes import ROOT, env, stop_all

yaml = pytest.importorskip("yaml")

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DEADLINE_S = 240.0  # eight workers import torch on 2 shared cores, then 2000 frames go through

# What the test changes, through the compose file's own variables: a short stream and small layers.
TEST_VARIABLES = {
    "FFSTREAM_STREAM_SOURCE": "synthetic:2000",
    "FFSTREAM_MODEL_LAYERS": "32,32,32,32",
    "FFSTREAM_STREAM_BATCH": "32",
    "FFSTREAM_THREADS": "1",
}


# --- compose, read as docker-compose reads it ---------------------------------------------------------------
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value, variables: dict[str, str]):
    """${NAME}, ${NAME:-default} and ${NAME-default}, as docker-compose substitutes them (enough for our file)."""
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            given = variables.get(name)
            if given is None or (given == "" and ":-" in m.group(0)):
                return default or ""
            return given
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    return value


def load_compose(variables: dict[str, str]) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), variables)


def default_services(compose: dict) -> dict[str, dict]:
    """The services `docker-compose up` starts: those in no profile."""
    return {name: svc for name, svc in compose["services"].items() if not svc.get("profiles")}


def start_order(services: dict[str, dict]) -> list[str]:
    order: list[str] = []
    def visit(name: str, path: tuple = ()) -> None:
        assert name not in path, f"depends_on cycle: {path + (name,)}"
        if name not in order:
            for dep in services[name].get("depends_on", {}):
                visit(dep, path + (name,))
            order.append(name)
    for name in services:
        visit(name)
    return order


_PORT = re.compile(r"(?<=:)(\d{2,5})\b")  # a port after a colon: in tcp://host:PORT, http://host:PORT/, HOST:PORT:PORT


def free_ports(wanted: set[int]) -> dict[int, int]:
    """Each port of the compose file -> a free port of this host, all different (the OS picks them: port 0)."""
    held = []
    try:
        for _ in wanted:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return {port: sock.getsockname()[1] for port, sock in zip(sorted(wanted), held)}
    finally:
        for sock in held:
            sock.close()


def local_value(value: str, services: set[str], mounts: dict[str, str], ports: dict[int, int]) -> str:
    """What a container sees, translated for this host: service names -> 127.0.0.1, the compose file's ports ->
    free ones, volume targets -> folders."""
    value = re.sub(r"tcp://([\w.-]+):", lambda m: "tcp://127.0.0.1:" if m.group(1) in services else m.group(0), value)
    if "://" in value:
        value = _PORT.sub(lambda m: str(ports.get(int(m.group(1)), m.group(1))), value)
    for target, source in mounts.items():
        if value == target or value.startswith(target + "/"):
            value = source + value[len(target):]
    return value


class Stack:
    """The compose file's services as local processes."""

    def __init__(self, tmp: Path, variables: dict[str, str]):
        self.tmp = tmp
        self.compose = load_compose(variables)
        self.services = default_services(self.compose)
        addresses = " ".join(str(v) for svc in self.services.values() for v in svc.get("environment", {}).values() if "://" in str(v))
        self.ports = free_ports({int(p) for p in _PORT.findall(addresses)})  # compose port -> this host's free port
        self.procs: dict[str, subprocess.Popen] = {}
        self.health_dir = tmp / "health"

    def mounts(self, svc: dict) -> dict[str, str]:
        out = {}
        for vol in svc.get("volumes", []):
            source, target = vol.split(":")[:2]
            if source.startswith("."):
                out[target] = str(ROOT / source)
            else:
                assert source in self.compose["volumes"], f"undeclared named volume {source}"
                (self.tmp / "volumes" / source).mkdir(parents=True, exist_ok=True)
                out[target] = str(self.tmp / "volumes" / source)
        return out

    def environment(self, svc: dict) -> dict[str, str]:
        mounts = self.mounts(svc)
        names = set(self.compose["services"])
        e = env()
        e.update({k: local_value(str(v), names, mounts, self.ports) for k, v in svc.get("environment", {}).items()})
        e["FFSTREAM_HEALTH_DIR"] = str(self.health_dir)  # one folder for all, instead of each container's /tmp
        return e

    def argv(self, svc: dict, args: list[str]) -> list[str]:
        mounts = self.mounts(svc)
        names = set(self.compose["services"])
        return [sys.executable, "-m", "ffstream", *(local_value(str(a), names, mounts, self.ports) for a in args)]

    def start(self, name: str) -> None:
        svc = self.services[name]
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(self.argv(svc, svc["command"]), stdout=log, stderr=subprocess.STDOUT, env=self.environment(svc), cwd=ROOT)

    def healthy(self, name: str) -> bool:
        """The service's own healthcheck command (its `test`, CMD form: `timeout -s KILL N ffstream ...`, ffstream the
        entry point)."""
        svc = self.services[name]
        test = svc["healthcheck"]["test"]
        assert test[:4] == ["CMD", "timeout", "-s", "KILL"] and test[5] == "ffstream", test
        return subprocess.run(self.argv(svc, test[6:]), env=self.environment(svc), cwd=ROOT, capture_output=True, timeout=60).returncode == 0

    def wait_healthy(self, name: str, deadline: float) -> None:
        pause = threading.Event()
        while not self.healthy(name):
            proc = self.procs[name]
            assert proc.poll() is None, f"{name} exited with {proc.returncode}: {self.log(name)}"
            assert time.monotonic() < deadline, f"{name} never turned healthy: {self.log(name)}"
            pause.wait(0.5)

    def up(self, deadline: float) -> None:
        """Start services in depends_on order, honouring each condition as docker-compose does."""
        for name in start_order(self.services):
            for dep, cond in self.services[name].get("depends_on", {}).items():
                if cond["condition"] == "service_healthy":
                    self.wait_healthy(dep, deadline)
            self.start(name)

    def published(self, name: str) -> list[tuple[str, int]]:
        """(host, port) of each port the service publishes, at the free port that stands in for the container's."""
        out = []
        for entry in self.services[name].get("ports", []):
            host, _, container = str(entry).split(":")
            out.append((host, self.ports[int(container)]))
        return out

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-2000:]

    def down(self) -> list[int]:
        return stop_all(list(self.procs.values()))


def test_compose_runs_as_local_processes(tmp_path):
    stack = Stack(tmp_path, TEST_VARIABLES)
    assert set(stack.services) == {"source", "layer1", "layer2", "layer3", "layer4", "sleep", "sink", "monitor"}
    published = stack.published("monitor")
    assert all(host == "127.0.0.1" for host, _ in published), published
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    # The metrics socket the monitor publishes on the host, as `ffstream monitor` would connect to it.
    host, port = published[0]
    sub.connect(f"tcp://{host}:{port}")
    deadline = time.monotonic() + DEADLINE_S
    try:
        stack.up(deadline)
        seen: dict[str, dict] = {}
        while not (seen.get("sink", {}).get("frames", 0) >= 2000 and all(seen.get(f"layer{i}", {}).get("frames", 0) > 0 for i in range(1, 5))):
            for name, proc in stack.procs.items():
                # The sink alone ends by itself, with 0, once the end-of-stream marker reaches it.
                assert proc.poll() is None or (name == "sink" and proc.returncode == 0), f"{name} exited with {proc.returncode}: {stack.log(name)}"
            assert time.monotonic() < deadline, f"metrics so far: { {k: v.get('frames') for k, v in seen.items()} }"
            if sub.poll(500, zmq.POLLIN):
                msg = wire.decode(sub.recv_multipart(), max_payload=0)
                if msg.kind == "metrics":  # not the layers' weight previews
                    seen[msg.stream] = msg.extra["metrics"]
        # Every worker reported to the monitor; every frame reached the sink through four layers.
        assert {"source", "layer1", "layer2", "layer3", "layer4", "sleep", "sink", "monitor"} <= set(seen), set(seen)
        assert seen["sink"]["frames"] == 2000
        # The web side, on the other published port: /metrics has the same figures.
        http_host, http_port = published[1]
        text = urllib.request.urlopen(f"http://{http_host}:{http_port}/metrics", timeout=10).read().decode()
        assert 'ffstream_frames_total{worker="sink"} 2000' in text, text[-2000:]
        assert stack.procs["sink"].wait(60) == 0, stack.log("sink")
        # up() saw monitor, sink and layer4..1 pass their healthchecks; source and sleep pass theirs too.
        for name in ("source", "sleep"):
            assert stack.healthy(name), f"{name} not healthy: {stack.log(name)}"
    finally:
        codes = stack.down()
        sub.close(linger=0)
        ctx.term()
    assert codes == [0] * len(codes), dict(zip(stack.procs, codes))
    # SIGTERM made the layers checkpoint into the named volume.
    saved = sorted(p.name for p in (tmp_path / "volumes" / "checkpoints").iterdir())
    assert [f"layer{i}.safetensors" for i in range(1, 5)] == [n for n in saved if n.startswith("layer")], saved


def test_compose_file_shape():
    compose = load_compose({})
    services = compose["services"]
    for name, svc in services.items():
        # The end of a finite stream is the sink's exit 0, and it stays down; any crash is still restarted. The source's
        # bad input (exit 2) is restarted a bounded number of times, then it stays down: no crash loop.
        wanted = {"sink": "on-failure", "source": "on-failure:5"}.get(name, "unless-stopped")
        assert svc["restart"] == wanted, name
        assert svc["command"][0] == "worker", name
        # Bounded by `timeout -s KILL`: Docker leaves an overrunning check running, and on a loaded host they piled up.
        assert svc["healthcheck"]["test"] == ["CMD", "timeout", "-s", "KILL", "9", "ffstream", "check", "--worker", name.replace("-webcam", "")], name
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond["condition"] in ("service_healthy", "service_started"), (name, dep)
        if name != "monitor":
            assert "ports" not in svc, f"{name} publishes ports; only the monitor may"
    assert "./videos:/videos:ro" in services["source"]["volumes"]
    assert "checkpoints:/var/lib/ffstream/checkpoints" in services["layer1"]["volumes"]
    assert services["source-webcam"]["profiles"] == ["webcam"]
    assert services["source-webcam"]["devices"] == ["/dev/video0:/dev/video0"]
    # Every binding address is on its own port, so the file runs on one host without Docker.
    env_ = services["sink"]["environment"]
    addrs = [env_[k] for k in env_ if k.startswith("FFSTREAM_TOPOLOGY_") and k != "FFSTREAM_TOPOLOGY_BIND_HOST"]
    all_ports = [int(p) for a in addrs for p in re.findall(r":(\d+)", a)]
    # 3 per layer; source frames and control; sink input and head; monitor collect, publish and HTTP
    assert len(all_ports) == len(set(all_ports)) == 3 * 4 + 7, all_ports
    gpu = yaml.safe_load(COMPOSE_GPU.read_text())["services"]
    assert sorted(gpu) == ["layer1", "layer2", "layer3", "layer4"]
    assert gpu["layer1"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed (apt-get install docker-compose)")
@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]])
def test_docker_compose_config_validates(files):
    argv = ["docker-compose", "--profile", "webcam"]
    for f in files:
        argv += ["-f", f]
    out = subprocess.run([*argv, "config", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr


# --- Kubernetes ----------------------------------------------------------------------------------------------
OVERLAYS = ["base", "overlays/cpu", "overlays/gpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_manifests_validate(overlay, tmp_path):
    pytest.importorskip("kubernetes_validate")
    # The kustomization reads the CURVE keys from base/keys, which git never holds: make them, as the README says.
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s, ignore=shutil.ignore_patterns("keys"))
    security.generate(k8s / "base" / "keys")
    docs = kustomize(k8s / overlay)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(rendered)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for worker in ("source", "layer1", "layer2", "layer3", "layer4", "sleep", "sink", "monitor"):
        assert any(kind in ("Deployment", "StatefulSet") and name.endswith(worker) for kind, name in kinds), worker
        if worker != "sleep":  # it binds nothing, so it needs no Service
            assert any(kind == "Service" and name.endswith(worker) for kind, name in kinds), worker
    assert any(kind == "Secret" for kind, _ in kinds) and any(kind == "ConfigMap" for kind, _ in kinds)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert_each_pod_holds_only_its_roles_secret(docs, workloads)
    for w in workloads:
        c = w["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["exec"]["command"][:2] == ["ffstream", "check"], w["metadata"]["name"]
        assert c["readinessProbe"]["exec"]["command"][:2] == ["ffstream", "check"], w["metadata"]["name"]
        assert c["resources"]["requests"] and c["resources"]["limits"], w["metadata"]["name"]
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        is_layer = w["metadata"]["name"].rstrip("0123456789").endswith("layer")
        assert (gpus is not None) == (overlay == "overlays/gpu" and is_layer), (overlay, w["metadata"]["name"], gpus)


def assert_each_pod_holds_only_its_roles_secret(docs: list[dict], workloads: list[dict]) -> None:
    """Per-role CURVE keys: every pod mounts all public keys, its own role's secret, the server's if it binds, and no
    other secret; no Secret holds the shared "worker" pair."""
    secrets = {d["metadata"]["name"]: set(d["data"]) for d in docs if d["kind"] == "Secret"}
    assert not any(name.startswith("worker.") for files in secrets.values() for name in files), secrets
    public = {f"{role}.key" for role in ("server", *security.ROLES)}
    for w in workloads:
        name = w["metadata"]["name"]
        role = name.rstrip("0123456789")
        volume = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == "curve")
        files = set().union(*(secrets[src["secret"]["name"]] for src in volume["projected"]["sources"]))
        wanted = public | {f"{role}.key_secret"} | ({"viewer.key_secret"} if role == "monitor" else set())
        wanted |= set() if role == "sleep" else {"server.key_secret"}  # the sleep worker binds nothing
        assert files == wanted, (name, sorted(files ^ wanted))


def test_bind_host_turns_bound_addresses_into_wildcards():
    from ffstream.config import Topology, load

    topo = load(environ={"FFSTREAM_TOPOLOGY_BIND_HOST": "*", "FFSTREAM_MODEL_LAYERS": "8,8",
                         "FFSTREAM_TOPOLOGY_LAYER_INPUTS": "tcp://layer1:5710,tcp://layer2:5720"}).topology.filled(2)
    ep = topo.layer(1)
    assert ep.input == "tcp://*:5710"  # bound: a wildcard
    assert ep.output == "tcp://layer2:5720"  # connected: the name as written
    assert topo.layer(2).output == topo.sink_input
    assert topo.bind("ipc:///run/x") == "ipc:///run/x"
    assert Topology().bind("tcp://127.0.0.1:5590") == "tcp://127.0.0.1:5590"  # without bind_host: as written
