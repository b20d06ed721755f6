"""Heartbeat files and the `ffstream check` test of them: is this worker alive, and has it reached its peers?

A worker with a health path (RunConfig.health_dir, FFSTREAM_HEALTH_DIR) writes <dir>/<name>.json after setup, then
about once a second, and once more with state "stopped" at exit:

    {"name": "layer1", "pid": 7, "time": 1718000000.0, "state": "running", "connected": true,
     "peers": {"tcp://layer2:5720": true}, "handshake_failures": 0}

`connected` is true when every socket the worker *connects* (its data outputs and inputs, not the metrics link)
has completed a ZMTP handshake with its peer (a CURVE one when CURVE is on), seen through zmq socket monitors.
Binding sockets are the stable side and need no peer, so a sink or monitor is connected once it runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

DEFAULT_DIR = "/tmp/ffstream-health"  # where `ffstream check` looks without --dir or FFSTREAM_HEALTH_DIR
DEFAULT_MAX_AGE_S = 30.0  # a heartbeat older than this is stale

_FAILED = {
    getattr(zmq, name): name.lower()
    for name in ("EVENT_HANDSHAKE_FAILED_AUTH", "EVENT_HANDSHAKE_FAILED_PROTOCOL", "EVENT_HANDSHAKE_FAILED_NO_DETAIL")
}
_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
for _event in _FAILED:
    _EVENTS |= _event


class Heartbeat:
    """Watches a worker's connecting sockets and writes its heartbeat file.

    >>> hb = Heartbeat("/tmp/h/layer1.json", "layer1"); hb.watch(sock, ["tcp://layer2:5720"]); hb.beat()  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, name: str):
        self.path = Path(path)
        self.name = name
        self.log = logging.getLogger(f"ffstream.{name}.health")
        self.peers: dict[str, bool] = {}  # connect address -> handshake done and not since disconnected
        self.handshake_failures = 0  # handshakes our peers refused (a CURVE key they do not know, say)
        self._monitors: list[zmq.Socket] = []

    def watch(self, sock: zmq.Socket, addresses: list[str]) -> None:
        """Follow `sock`'s connections to `addresses` through a socket monitor."""
        for addr in addresses:
            self.peers.setdefault(addr, False)
        self._monitors.append(sock.get_monitor_socket(_EVENTS))

    @property
    def connected(self) -> bool:
        return all(self.peers.values())

    def poll_events(self) -> None:
        for mon in self._monitors:
            while mon.poll(0, zmq.POLLIN):
                event = recv_monitor_message(mon)
                addr = event["endpoint"].decode(errors="replace")
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.peers[addr] = True
                elif event["event"] == zmq.EVENT_DISCONNECTED:
                    if addr in self.peers:
                        self.peers[addr] = False
                elif event["event"] in _FAILED:
                    self.handshake_failures += 1
                    self.log.warning("handshake with %s failed (%s); %d so far", addr, _FAILED[event["event"]], self.handshake_failures)

    def beat(self, state: str = "running") -> None:
        self.poll_events()
        write_json_atomic(
            self.path,
            {
                "name": self.name,
                "pid": os.getpid(),
                "time": time.time(),
                "state": state,
                "connected": self.connected,
                "peers": self.peers,
                "handshake_failures": self.handshake_failures,
            },
        )

    def close(self) -> None:
        """Write the last heartbeat ("stopped") and close the monitors; before the context terminates."""
        try:
            self.beat("stopped")
        except OSError as exc:
            self.log.warning("could not write the last heartbeat: %s", exc)
        finally:
            for mon in self._monitors:
                mon.close(linger=0)
            self._monitors.clear()


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write a temporary file, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def check_file(path: str | os.PathLike, max_age_s: float = DEFAULT_MAX_AGE_S, need_connected: bool = True) -> tuple[bool, str]:
    """(healthy, one line saying why) for one heartbeat file."""
    path = Path(path)
    try:
        beat = json.loads(path.read_text())
        name, pid, stamp, state = beat["name"], int(beat["pid"]), float(beat["time"]), beat["state"]
    except FileNotFoundError:
        return False, f"no heartbeat at {path}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable heartbeat {path}: {exc}"
    age = time.time() - stamp
    if state != "running":
        return False, f"{name}: {state}"
    if not pid_alive(pid):
        return False, f"{name}: process {pid} is gone"
    if age > max_age_s:
        return False, f"{name}: stale, last heartbeat {age:.1f}s ago (limit {max_age_s:g}s)"
    if need_connected and not beat.get("connected"):
        waiting = [addr for addr, up in beat.get("peers", {}).items() if not up]
        return False, f"{name}: not connected; no handshake yet with {', '.join(waiting) or 'its peers'}"
    return True, f"{name}: ok, pid {pid}, {'connected, ' if beat.get('connected') else ''}heartbeat {age:.1f}s ago"


def check(directory: str | os.PathLike, worker: str | None = None, max_age_s: float = DEFAULT_MAX_AGE_S, need_connected: bool = True) -> tuple[bool, list[str]]:
    """Check one worker's heartbeat, or every heartbeat in `directory` (at least one must exist)."""
    directory = Path(directory)
    paths = [directory / f"{worker}.json"] if worker else sorted(directory.glob("*.json"))
    if not paths:
        return False, [f"no heartbeat files in {directory}"]
    results = [check_file(p, max_age_s, need_connected) for p in paths]
    return all(ok for ok, _ in results), [line for _, line in results]
