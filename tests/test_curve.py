"""CURVE between workers: an authorised peer gets through, one with an unknown key is refused, logged and counted."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from ffstream.net import security, wire
from ffstream.net.transport import HEARTBEAT_IVL_MS, Receiver, make_socket
from ffstream.workers.monitor import MonitorWorker
from tests.processes import ROOT, env, eventually

DEADLINE_S = 15.0


def metrics(name: str) -> list:
    return wire.encode(wire.Message("metrics", np.zeros(0, np.float32), stream=name, extra={"metrics": {"name": name}}))


def test_keys_generate_writes_pairs_with_private_secrets(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ffstream", "keys", "generate", str(tmp_path / "k")], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == sorted(f"{n}{ext}" for n in ("server", *security.DEFAULT_CLIENTS) for ext in (".key", ".key_secret"))
    for path in (tmp_path / "k").glob("*.key_secret"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    public, secret = zmq.auth.load_certificate(tmp_path / "k" / "server.key_secret")
    assert len(public) == 40 and len(secret) == 40  # z85 text of 32-byte keys
    # A second run keeps the pairs it finds.
    before = (tmp_path / "k" / "server.key_secret").read_text()
    security.generate(tmp_path / "k")
    assert (tmp_path / "k" / "server.key_secret").read_text() == before


@pytest.mark.parametrize(
    "addr, loopback",
    [("tcp://127.0.0.1:5710", True), ("tcp://localhost:1", True), ("tcp://[::1]:1", True), ("ipc:///tmp/x", True),
     ("tcp://*:5710", False), ("tcp://layer1:5710", False), ("tcp://10.0.0.7:5710", False)],
)
def test_loopback_needs_no_curve_only_while_curve_is_off(addr, loopback):
    assert security.is_loopback(addr) is loopback


def test_keys_mean_curve_on_loopback_too_so_the_monitor_cli_reaches_a_wildcard_bind_over_127(tmp_path):
    """A monitor bound on every interface (a published Docker port) and `ffstream monitor` on the same host over
    127.0.0.1: with keys both ends use CURVE, whatever the address (the client skipped it on loopback, the server
    required it, and the handshake never completed)."""
    keys = tmp_path / "keys"
    security.generate(keys)
    worker = MonitorWorker("tcp://0.0.0.0:*", "tcp://0.0.0.0:*", metrics_interval=0.2)
    security.enable(worker.context, keys, client="monitor")
    publisher = zmq.Context()
    security.enable(publisher, keys, client="layer")
    thread = threading.Thread(target=worker.run, daemon=True)
    pub = None
    thread.start()
    try:
        eventually(lambda: hasattr(worker, "poller"), DEADLINE_S, "the monitor's setup")
        assert worker.publish.getsockopt(zmq.MECHANISM) == zmq.CURVE
        port = lambda s: s.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
        pub = make_socket(publisher, zmq.PUB, connect=f"tcp://127.0.0.1:{port(worker.collect)}")
        assert pub.getsockopt(zmq.MECHANISM) == zmq.CURVE  # loopback, and still CURVE
        cli = subprocess.Popen([sys.executable, "-m", "ffstream", "monitor", "--json", "--count", "1", "--seconds", "60",
                                "--connect", f"tcp://127.0.0.1:{port(worker.publish)}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**env(), "FFSTREAM_SECURITY_CURVE_DIR": str(keys)}, cwd=ROOT)
        deadline = time.monotonic() + 60
        while cli.poll() is None:  # until the viewer's line comes: publish every 0.1 s, for a subscriber that joins late
            assert time.monotonic() < deadline, "no metrics reached `ffstream monitor` over 127.0.0.1"
            pub.send_multipart(metrics("layer9"))
            with contextlib.suppress(subprocess.TimeoutExpired):
                cli.wait(0.1)
        out, err = cli.communicate(timeout=10)
        assert cli.returncode == 0 and out.strip(), err[-2000:]
        assert {json.loads(line)["worker"] for line in out.splitlines()} <= {"layer9", "monitor"}
        assert worker.metrics()["auth_refused"] == 0
    finally:
        worker.stop()
        close_peers([pub] if pub is not None else [], [publisher])
        thread.join(10)


def test_plain_sockets_without_keys(zmq_context):
    sock = make_socket(zmq_context, zmq.PULL, bind="tcp://127.0.0.1:*")
    try:
        assert sock.getsockopt(zmq.MECHANISM) == zmq.NULL
    finally:
        sock.close(linger=0)


def test_authorised_peer_gets_through_and_unknown_key_is_refused(tmp_path, caplog):
    keys, rogue = tmp_path / "keys", tmp_path / "rogue"
    security.generate(keys)
    # The rogue knows the server's public key (it is not secret) and has a client pair of its own, unlisted.
    rogue.mkdir()
    shutil.copy(keys / "server.key", rogue)
    shutil.copy(keys / "server.key_secret", rogue)
    security.generate(rogue, clients=("layer",))

    # A real worker: the monitor binds its XSUB and XPUB, so both are CURVE servers behind the authenticator.
    worker = MonitorWorker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_interval=0.2)
    curve = security.enable(worker.context, keys, client="monitor")
    thread = threading.Thread(target=worker.run, daemon=True)
    contexts = {name: zmq.Context() for name in ("viewer", "good", "bad")}
    sockets = []
    caplog.set_level(logging.WARNING, logger="ffstream.net.security")
    thread.start()
    try:
        eventually(lambda: hasattr(worker, "poller"), DEADLINE_S, "the monitor's setup")
        collect = worker.collect.getsockopt_string(zmq.LAST_ENDPOINT)
        publish = worker.publish.getsockopt_string(zmq.LAST_ENDPOINT)
        assert worker.collect.getsockopt(zmq.MECHANISM) == zmq.CURVE

        security.enable(contexts["viewer"], keys, client="viewer")
        security.enable(contexts["good"], keys, client="layer")
        security.enable(contexts["bad"], rogue, client="layer")
        sub = make_socket(contexts["viewer"], zmq.SUB, connect=publish)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        good = make_socket(contexts["good"], zmq.PUB, connect=collect)
        bad = make_socket(contexts["bad"], zmq.PUB, connect=collect)
        sockets += [sub, good, bad]

        seen: set[str] = set()
        deadline = time.monotonic() + DEADLINE_S
        while not ("good" in seen and curve.refused >= 1):
            assert time.monotonic() < deadline, f"seen {seen}, refused {curve.refused}"
            good.send_multipart(metrics("good"))
            bad.send_multipart(metrics("rogue"))
            if sub.poll(100, zmq.POLLIN):
                seen.add(wire.decode(sub.recv_multipart(), max_payload=0).stream)
        # Whatever else arrives, nothing from the rogue does: its handshake never completed.
        while sub.poll(300, zmq.POLLIN):
            seen.add(wire.decode(sub.recv_multipart(), max_payload=0).stream)
        assert "rogue" not in seen
        assert curve.admitted >= 2  # the viewer and the good publisher
        assert worker.metrics()["auth_refused"] == curve.refused >= 1
        assert any("refused a CURVE client" in r.getMessage() for r in caplog.records)
    finally:
        worker.stop()
        close_peers(sockets, contexts.values())
        thread.join(10)
    # close() stopped the authenticator before terminating the context, so the worker did not hang.
    assert not thread.is_alive()
    assert security.enabled(worker.context) is None


def test_a_silent_curve_client_never_blocks_the_receiver(tmp_path):
    """The source's control socket (a CURVE PULL) with the sink's acknowledgement PUSH connected and silent: libzmq
    wakes the poller once at the client's first heartbeat with no message. recv must say "nothing", not block for
    BLOCKING_TIMEOUT_MS and raise zmq.Again (which crashed the source in docker-compose, issue 21)."""
    security.generate(tmp_path)
    contexts = {role: zmq.Context() for role in ("source", "sink")}
    sockets = []
    try:
        for role, ctx in contexts.items():
            security.enable(ctx, tmp_path, client=role)
        pull = make_socket(contexts["source"], zmq.PULL, bind="tcp://127.0.0.1:*", purpose="control")
        push = make_socket(contexts["sink"], zmq.PUSH, connect=pull.getsockopt_string(zmq.LAST_ENDPOINT), purpose="control")
        sockets += [pull, push]
        receiver = Receiver(pull, name="control")
        # Past the first heartbeats, each recv short: a blocking recv would overrun this loop's length by seconds.
        quiet_until = time.monotonic() + 2.5 * HEARTBEAT_IVL_MS / 1000
        while time.monotonic() < quiet_until:
            t0 = time.monotonic()
            assert receiver.recv(100) is None
            assert time.monotonic() - t0 < 1.0, "recv blocked on a poll with no message"
        push.send_multipart(wire.encode(wire.Message("control", np.zeros(0, np.float32), extra={"command": "ack"})))
        msg = None
        deadline = time.monotonic() + DEADLINE_S
        while msg is None:
            assert time.monotonic() < deadline, "the message never came"
            msg = receiver.recv(100)
        assert msg.extra["command"] == "ack" and receiver.took
    finally:
        close_peers(sockets, contexts.values())


def test_a_viewer_key_sending_frames_to_a_layer_is_refused_and_counted(tmp_path, zmq_context, socket):
    """Authorisation, not only authentication: the viewer's key is a listed key, but a layer's input admits workers only."""
    from ffstream.config.plans import Batching, LayerEndpoints
    from ffstream.workers.layer import LayerWorker
    from tests.rig import LAYER, ROWS, frames, receive, running, unique

    keys = tmp_path / "keys"
    security.generate(keys)
    ep = LayerEndpoints("tcp://0.0.0.0:*", unique("out"), unique("neg"), unique("snap"), None)  # input: a CURVE server
    output, snapshot = socket(zmq.PULL), socket(zmq.REQ)
    output.bind(ep.output)
    snapshot.connect(ep.snapshot)
    worker = LayerWorker(1, LAYER, ep, context=zmq_context, batching=Batching(max_rows=ROWS))
    curve = security.enable(zmq_context, keys, client="layer", role="layer")
    peers = {role: zmq.Context() for role in ("viewer", "source")}
    sockets = []
    try:
        with running(worker):
            snapshot.send_multipart(wire.encode(wire.Message("snapshot_request", np.zeros(0, np.float32))))
            assert receive(snapshot).kind == "snapshot"  # the handshake: every socket is bound
            port = worker.input.sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
            pushes = {}
            for role, ctx in peers.items():
                security.enable(ctx, keys, client=role)
                pushes[role] = make_socket(ctx, zmq.PUSH, connect=f"tcp://127.0.0.1:{port}")
                sockets.append(pushes[role])

            deadline = time.monotonic() + DEADLINE_S
            while curve.refused < 1:  # the viewer's handshake is refused (and retried by ZeroMQ, refused again)
                assert time.monotonic() < deadline, "the viewer's handshake was never refused"
                with contextlib.suppress(zmq.Again):
                    pushes["viewer"].send_multipart(wire.encode(frames(seq=666)), flags=zmq.NOBLOCK)
                output.poll(100)
            assert not output.poll(300), "a frame from the viewer's key reached the layer"
            assert worker.metrics()["auth_refused"] >= 1

            # A source's key on the same socket is admitted: frames go through, learned.
            pushes["source"].send_multipart(wire.encode(frames(seq=1)))
            assert receive(output, timeout=DEADLINE_S).seq == 1
            assert curve.admitted >= 1
    finally:
        close_peers(sockets, peers.values())


def test_secret_keys_readable_by_others_are_refused_in_one_line(tmp_path, zmq_context):
    keys = tmp_path / "keys"
    security.generate(keys)
    (keys / "layer.key_secret").chmod(0o644)
    with pytest.raises(security.KeyFileError) as info:
        security.enable(zmq_context, keys, client="layer")
    assert "\n" not in str(info.value) and "chmod 600" in str(info.value) and "layer.key_secret" in str(info.value)
    (keys / "layer.key_secret").chmod(0o440)  # a Kubernetes Secret mounted for a group (fsGroup): allowed
    security.enable(zmq_context, keys, client="layer")
    security.release(zmq_context)


def test_the_shared_worker_key_is_admitted_nowhere_and_refused_as_a_workers_own(tmp_path, zmq_context):
    """A key directory made before roles still holds worker.key: no bound socket admits it, and no worker may use it."""
    keys = tmp_path / "keys"
    security.generate(keys, clients=(*security.ROLES, security.SHARED_WORKER))
    curve = security.enable(zmq_context, keys, client="layer", role="layer")
    key = lambda name: zmq.auth.load_certificate(keys / f"{name}.key")[0]  # noqa: E731 - its public key, z85
    assert curve.callback("data", key("source")) and curve.callback("data", key("sleep"))
    for domain in ("data", "metrics-in", "metrics-out"):
        assert not curve.callback(domain, key(security.SHARED_WORKER)), domain
    assert not curve.callback("data", key("viewer")) and curve.refused == 4
    security.release(zmq_context)
    with pytest.raises(security.KeyFileError) as info:
        security.enable(zmq_context, keys, client=security.SHARED_WORKER)
    assert "\n" not in str(info.value) and "no longer used" in str(info.value)
    # A real worker process given it: one line, exit 2, before any socket.
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"security": {"curve_dir": "%s", "curve_client": "worker"}}' % keys)
    out = subprocess.run([sys.executable, "-m", "ffstream", "worker", "sink", "--config", str(cfg)], capture_output=True, text=True,
                         env=env(), cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("ffstream worker: error: the shared 'worker' key pair"), out.stderr[-2000:]


def test_a_process_that_binds_nothing_needs_no_server_secret(tmp_path, zmq_context):
    """What the sleep worker's pod gets (deploy/k8s): the public keys and its own secret; a bind would need the server's."""
    keys, mounted = tmp_path / "keys", tmp_path / "sleep-pod"
    security.generate(keys)
    mounted.mkdir()
    for path in [*keys.glob("*.key"), keys / "sleep.key_secret"]:
        shutil.copy2(path, mounted / path.name)
    security.enable(zmq_context, mounted, client="sleep")
    sock = make_socket(zmq_context, zmq.PUSH, connect="tcp://layer1:5711")  # a CURVE client: the server's public key is enough
    assert sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
    sock.close(linger=0)
    with pytest.raises(security.KeyFileError, match="server.key_secret"):
        make_socket(zmq_context, zmq.PULL, bind="tcp://*:0")
    security.release(zmq_context)
    with pytest.raises(security.KeyFileError, match=r"no key pair for 'layer' .*layer.key_secret missing"):
        security.enable(zmq_context, mounted, client="layer")


def close_peers(sockets, contexts) -> None:
    """Close the test's own peer sockets, then release each peer context's CURVE and terminate it."""
    for sock in sockets:
        sock.close(linger=0)
    for ctx in contexts:
        security.release(ctx)
        ctx.term()
