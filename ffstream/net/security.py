"""CURVE between hosts: key files, a ZAP authenticator that admits only listed client keys, and the make_socket hook.

A key directory, as `ffstream keys generate DIR` writes it (flat, so that it can be one Kubernetes Secret):

    DIR/server.key  DIR/server.key_secret      the server pair: every worker holds it, for the sockets it binds
    DIR/<client>.key  DIR/<client>.key_secret  one pair per client ("worker" and "viewer" by default)

The authenticator admits exactly the public keys DIR/*.key other than server.key: delete a client's .key file
to shut it out. Secret files are mode 0600.

CURVE is off unless a directory is given (`security.curve_dir`, FFSTREAM_SECURITY_CURVE_DIR), and never used on
loopback (127.0.0.0/8, localhost, ::1), ipc:// or inproc:// addresses: both ends of a link must then agree, so a
socket bound on tcp://*:PORT with CURVE on needs CURVE from every client, local ones too.

>>> curve = enable(ctx, "/keys")    # doctest: +SKIP
>>> sock = make_socket(ctx, zmq.PULL, bind="tcp://*:5710")   # now a CURVE server; unknown client keys are refused
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("ffstream.net.security")

SERVER = "server"
DEFAULT_CLIENTS = ("worker", "viewer")  # worker: every ffstream worker; viewer: `ffstream monitor` on another host

_enabled: dict[int, "Curve"] = {}  # id(context) -> its CURVE settings; one context per worker process


class KeyFileError(OSError):
    """A missing or unreadable key file; the message names it."""


def generate(directory: str | os.PathLike, clients: tuple[str, ...] = DEFAULT_CLIENTS) -> list[Path]:
    """Write the server pair and one pair per client into `directory`; existing pairs are kept. Returns new files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (SERVER, *clients):
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad key name {name!r}")
        if (directory / f"{name}.key_secret").exists():
            continue
        old_umask = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
        try:
            public, secret = zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old_umask)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
        written += [Path(public), Path(secret)]
    return written


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read CURVE key {path}: {exc}") from None
    if need_secret and not secret:
        raise KeyFileError(f"{path} holds no secret key")
    return public, secret


def is_loopback(addr: str) -> bool:
    """True for addresses CURVE leaves alone: ipc, inproc, and tcp on loopback."""
    if not addr.startswith("tcp://"):
        return True
    host = addr[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


class Curve:
    """One process's keys, its authenticator (started with the first server socket) and its refusal count."""

    def __init__(self, ctx: zmq.Context, directory: str | os.PathLike, client: str = DEFAULT_CLIENTS[0], loopback: bool = False):
        self.ctx = ctx
        self.loopback = loopback  # secure loopback addresses too (tests, or a one-host setup that wants it)
        self.directory = Path(directory)
        self.server_public, self.server_secret = _load(self.directory / f"{SERVER}.key_secret", need_secret=True)
        self.client_public, self.client_secret = _load(self.directory / f"{client}.key_secret", need_secret=True)
        self.authorized = self.load_authorized()
        if not self.authorized:
            raise KeyFileError(f"no client public keys (*.key other than {SERVER}.key) in {self.directory}")
        self.refused = 0  # handshakes the authenticator denied
        self.admitted = 0
        self._auth: ThreadAuthenticator | None = None

    def load_authorized(self) -> set[bytes]:
        """Public keys (z85) of every DIR/*.key except the server's."""
        return {_load(p, need_secret=False)[0] for p in sorted(self.directory.glob("*.key")) if p.name != f"{SERVER}.key"}

    # the ZAP credentials provider -----------------------------------------------------------------------
    def callback(self, domain: str, client_key: bytes) -> bool:
        """Called by the authenticator thread for each CURVE handshake; client_key is z85."""
        if client_key in self.authorized:
            self.admitted += 1
            return True
        self.refused += 1
        log.warning("refused a CURVE client with an unknown key %s (%d refused so far)", client_key.decode("ascii", "replace"), self.refused)
        return False

    # sockets ----------------------------------------------------------------------------------------------
    def secure(self, sock: zmq.Socket, bind: str | None, connect: list[str]) -> None:
        """Make `sock` a CURVE server (it binds a non-loopback tcp address) or client (it connects to one)."""
        if bind and (self.loopback or not is_loopback(bind)):
            self._start_authenticator()
            sock.curve_secretkey = self.server_secret
            sock.curve_publickey = self.server_public
            sock.curve_server = True
        elif any(self.loopback or not is_loopback(addr) for addr in connect):
            sock.curve_secretkey = self.client_secret
            sock.curve_publickey = self.client_public
            sock.curve_serverkey = self.server_public

    def _start_authenticator(self) -> None:
        if self._auth is None:
            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("ffstream.net.security.zap"))
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=self)

    def close(self) -> None:
        """Stop the authenticator; it must go before the context terminates."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def enable(ctx: zmq.Context, directory: str | os.PathLike, client: str = DEFAULT_CLIENTS[0], loopback: bool = False) -> Curve:
    """From now on make_socket(ctx, ...) uses CURVE on every non-loopback tcp address (on every address with loopback)."""
    release(ctx)
    curve = _enabled[id(ctx)] = Curve(ctx, directory, client, loopback)
    log.info("CURVE on: keys from %s, client key %r, %d client keys admitted", directory, client, len(curve.authorized))
    return curve


def enabled(ctx: zmq.Context) -> Curve | None:
    return _enabled.get(id(ctx))


def release(ctx: zmq.Context) -> None:
    """Undo enable(): stop the authenticator. Call before ctx.term() (Worker.close does)."""
    curve = _enabled.pop(id(ctx), None)
    if curve is not None:
        curve.close()


def secure(ctx: zmq.Context, sock: zmq.Socket, bind: str | None, connect: str | list[str] | None) -> None:
    """The make_socket hook: nothing unless enable(ctx, ...) was called."""
    curve = _enabled.get(id(ctx))
    if curve is not None:
        curve.secure(sock, bind, [connect] if isinstance(connect, str) else list(connect or []))


def refused(ctx: zmq.Context) -> int:
    curve = _enabled.get(id(ctx))
    return curve.refused if curve else 0
