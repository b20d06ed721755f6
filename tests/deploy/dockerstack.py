"""docker-compose.yml under real Docker, driven from the host: the image, the project, its containers, the faults.

Infrastructure we cannot get (no docker, no daemon, no base image) raises Unavailable, which the test turns into
one skip line; anything our own stack does wrong is an assertion.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SCRIPT = ROOT / "deploy" / "compose-test-image.sh"
INFRA_EXIT = 3  # compose-test-image.sh: the docker infrastructure is missing
IMAGE_BUILD_TIMEOUT_S = 1800  # a first build on 2 cores: debootstrap (minutes) and pip; later ones hit the cache
POLL_S = 0.5  # seconds between looks at a container's state


class Unavailable(Exception):
    """Docker cannot be used here: the test skips with this one line."""


def docker_usable() -> None:
    for tool, package in (("docker", "docker.io"), ("docker-compose", "docker-compose")):
        if shutil.which(tool) is None:
            raise Unavailable(f"no {tool} binary (apt-get install {package})")
    out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        raise Unavailable(f"docker daemon not reachable ({last}); start dockerd as root")


def build_image(image: str) -> float:
    """deploy/compose-test-image.sh: the base image (cached), then the project's image; returns seconds taken."""
    t0 = time.monotonic()
    out = subprocess.run([str(IMAGE_SCRIPT)], check=False, capture_output=True, text=True, timeout=IMAGE_BUILD_TIMEOUT_S,
                         env={**os.environ, "FFSTREAM_IMAGE": image})
    print(out.stderr.rstrip())
    if out.returncode == INFRA_EXIT:
        raise Unavailable(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, f"image build failed:\n{out.stderr[-3000:]}"
    return time.monotonic() - t0


def wait_until(what: str, ready: Callable[[], object], timeout_s: float, explain: Callable[[], str] = lambda: "") -> object:
    """Poll `ready` until it returns something truthy; fail with `what` (and `explain()`) after timeout_s."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    while True:
        value = ready()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s. {explain()}"
        pause.wait(POLL_S)


@dataclass
class ComposeProject:
    """One `docker-compose -p NAME` project of docker-compose.yml plus a test override file."""

    override: Path  # the test's compose override (JSON is YAML)
    variables: dict[str, str]  # FFSTREAM_* settings the compose file interpolates
    name: str = field(default_factory=lambda: f"ffstest{uuid.uuid4().hex[:10]}")  # unique: no clash with others
    _ids: dict[str, str] = field(default_factory=dict)  # service -> container id (docker-compose ps is slow)

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["docker-compose", "-p", self.name, "-f", str(ROOT / "docker-compose.yml"), "-f", str(self.override), *args]
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **self.variables})
        assert not check or out.returncode == 0, f"{' '.join(args)} failed: {out.stderr[-3000:]}"
        return out

    def container(self, service: str) -> str:
        """The service's container id; kept, since a restart (policy or `docker restart`) keeps the container."""
        if service not in self._ids:
            ids = self.compose("ps", "-q", service).stdout.split()
            assert len(ids) == 1, f"{service}: containers {ids}"
            self._ids[service] = ids[0]
        return self._ids[service]

    def recreate(self, service: str) -> None:
        """`up -d` of one service whose configuration changed: compose replaces its container (SIGTERM, then a new one)."""
        self.compose("up", "-d", "--no-build", service, timeout=300)
        self._ids.pop(service, None)

    def forget_containers(self) -> None:
        """After `down`: the next `up` makes new containers."""
        self._ids.clear()

    def inspect(self, service: str) -> dict:
        out = subprocess.run(["docker", "inspect", self.container(service)], check=False, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)[0]

    def restart_counts(self, services) -> dict[str, int]:
        """Docker's restart count of each service's container, in one `docker inspect`."""
        out = subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", *[self.container(s) for s in services]],
                             check=False, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return dict(zip(services, map(int, out.stdout.split())))

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        return state.get("Health", {}).get("Status", state["Status"])

    def address(self, service: str) -> str:
        """The container's address on the project's network, as another host sees it."""
        return self.inspect(service)["NetworkSettings"]["Networks"][self.network]["IPAddress"]

    @property
    def network(self) -> str:
        return f"{self.name}_default"

    def host_port(self, service: str, port: int) -> int:
        """The free host port Docker picked for a published container port."""
        return int(self.compose("port", service, str(port)).stdout.strip().rsplit(":", 1)[1])

    def kill9(self, service: str) -> None:
        """kill -9 of the service's process from the host: to Docker a crash, which its restart policy answers."""
        pid = self.inspect(service)["State"]["Pid"]
        assert pid > 0, f"{service} is not running"
        os.kill(pid, signal.SIGKILL)

    def disconnect(self, service: str) -> None:
        subprocess.run(["docker", "network", "disconnect", self.network, self.container(service)], check=True, timeout=60)

    def reconnect(self, service: str) -> None:
        """Back on the network under its service name (compose's alias is lost with the disconnect)."""
        subprocess.run(["docker", "network", "connect", "--alias", service, self.network, self.container(service)], check=True, timeout=60)

    def logs(self, service: str, lines: int = 40) -> str:
        return self.compose("logs", "--no-color", "--tail", str(lines), service, check=False).stdout[-4000:]

    def down(self) -> None:
        """Everything the project made goes, even where `down` itself fails or times out on a loaded machine."""
        try:
            self.compose("down", "-v", "--timeout", "20", check=False, timeout=300)
        except subprocess.TimeoutExpired:
            pass
        label = f"label=com.docker.compose.project={self.name}"
        left = subprocess.run(["docker", "ps", "-aq", "--filter", label], check=False, capture_output=True, text=True, timeout=60).stdout.split()
        leftovers = [["docker", "rm", "-f", "-v", *left]] if left else []
        leftovers += [["docker", "network", "rm", self.network], ["docker", "volume", "rm", f"{self.name}_checkpoints"]]
        for argv in leftovers:  # each fails harmlessly when `down` did remove it
            subprocess.run(argv, check=False, capture_output=True, timeout=120)


class Metrics:
    """Every metrics message the monitor publishes, heard from the host over CURVE (the "viewer" key pair)."""

    def __init__(self, connect: str, keys: str):
        os.environ["FFSTREAM_SECURITY_CURVE_DIR"] = keys  # metrics_feed's way to CURVE; restored in close()
        from ffstream.commands.monitor import metrics_feed

        self.latest: dict[str, dict] = {}  # worker -> its last metrics
        self.history: list[tuple[float, str, dict]] = []  # (host monotonic time, worker, metrics)
        self._open = metrics_feed
        self.connect = ""
        self.retarget(connect)

    def retarget(self, connect: str) -> None:
        """Listen at `connect` from now on, the history kept: a restarted container may get a new ephemeral host port."""
        if connect == self.connect:
            return
        if self.connect:
            self._stop.set()
            self._thread.join(10)
        self.connect = connect
        self._stop = threading.Event()
        self._feed = self._open(connect)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop, feed = self._stop, self._feed
        for msg in feed:
            if stop.is_set():
                break
            if msg is not None:
                m = msg.extra["metrics"]
                self.latest[msg.stream] = m
                self.history.append((time.monotonic(), msg.stream, m))
        feed.close()

    def frames(self) -> dict[str, int]:
        return {w: m.get("frames") for w, m in sorted(self.latest.items()) if "frames" in m}

    def since(self, t: float, worker: str) -> list[tuple[float, dict]]:
        return [(at, m) for at, w, m in list(self.history) if at > t and w == worker]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        os.environ.pop("FFSTREAM_SECURITY_CURVE_DIR", None)
