"""No plaintext by accident: a non-loopback tcp bind without CURVE is refused in one line unless the config allows it."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import yaml
import zmq

from ffstream.config import load
from ffstream.net import security
from ffstream.net.transport import make_socket
from tests.processes import ROOT, env


def test_a_wildcard_bind_without_curve_is_refused_in_one_line(zmq_context):
    with pytest.raises(security.PlaintextRefused) as info:
        make_socket(zmq_context, zmq.PULL, bind="tcp://0.0.0.0:*")
    message = str(info.value)
    assert "\n" not in message and "tcp://0.0.0.0:*" in message and "FFSTREAM_SECURITY_ALLOW_PLAINTEXT" in message


def test_loopback_ipc_and_connects_need_nothing(zmq_context, tmp_path):
    made = [
        make_socket(zmq_context, zmq.PULL, bind="tcp://127.0.0.1:*"),
        make_socket(zmq_context, zmq.PULL, bind=f"ipc://{tmp_path}/in"),
        make_socket(zmq_context, zmq.PUSH, connect="tcp://10.255.255.1:5710"),  # connecting: the binding side decides
    ]
    try:
        assert made[0].getsockopt_string(zmq.LAST_ENDPOINT).startswith("tcp://127.0.0.1:")
    finally:
        for sock in made:
            sock.close(linger=0)


def test_allow_plaintext_lets_the_bind_through_and_release_forgets_it(zmq_context):
    security.allow_plaintext(zmq_context)
    sock = make_socket(zmq_context, zmq.PULL, bind="tcp://0.0.0.0:*")
    try:
        assert sock.getsockopt_string(zmq.LAST_ENDPOINT).startswith("tcp://0.0.0.0:")
    finally:
        sock.close(linger=0)
    security.release(zmq_context)
    with pytest.raises(security.PlaintextRefused):
        make_socket(zmq_context, zmq.PULL, bind="tcp://0.0.0.0:*")


def test_the_config_field_comes_from_the_environment():
    assert load(environ={}).security.allow_plaintext is False
    assert load(environ={"FFSTREAM_SECURITY_ALLOW_PLAINTEXT": "true"}).security.allow_plaintext is True


def test_compose_allows_plaintext_on_its_private_network_and_k8s_uses_curve():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    common = compose["x-env"]
    assert common["FFSTREAM_TOPOLOGY_BIND_HOST"] == "*"
    assert common["FFSTREAM_SECURITY_ALLOW_PLAINTEXT"].endswith(":-true}")
    kustomization = (ROOT / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text()
    assert "FFSTREAM_SECURITY_CURVE_DIR=" in kustomization and "ALLOW_PLAINTEXT" not in kustomization


def worker_env(tmp_path, **extra: str) -> dict[str, str]:
    return {**env(), "FFSTREAM_TOPOLOGY_SINK_INPUT": "tcp://0.0.0.0:*", "FFSTREAM_TOPOLOGY_SINK_SNAPSHOT": f"ipc://{tmp_path}/snap",
            "FFSTREAM_TOPOLOGY_MONITOR_COLLECT": f"ipc://{tmp_path}/mon", "FFSTREAM_MODEL_LAYERS": "8", **extra}


def test_ffstream_worker_refuses_a_plaintext_wildcard_bind_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ffstream", "worker", "sink"], capture_output=True, text=True, check=False,
                         env=worker_env(tmp_path), cwd=ROOT, timeout=120)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "refusing to bind tcp://0.0.0.0:*" in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_ffstream_worker_binds_in_plaintext_when_the_config_allows_it(tmp_path):
    """The same sink with allow_plaintext binds and keeps running; it is stopped by SIGTERM and exits cleanly."""
    proc = subprocess.Popen([sys.executable, "-m", "ffstream", "worker", "sink"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=worker_env(tmp_path, FFSTREAM_SECURITY_ALLOW_PLAINTEXT="true"), cwd=ROOT, text=True)
    deadline = threading.Timer(120.0, proc.kill)  # a worker that never logs is killed, which ends the loop below
    deadline.start()
    try:
        seen = []
        for line in proc.stdout:  # the worker logs "started: ..." once every socket is bound
            seen.append(line)
            if "started" in line or "error" in line:
                break
        assert any("started" in line for line in seen), "".join(seen)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        deadline.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
