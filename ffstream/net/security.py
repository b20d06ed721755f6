"""CURVE between hosts: key files, a ZAP authenticator that admits only listed client keys, and the make_socket hook.

A key directory, as `ffstream keys generate DIR` writes it (flat, so that it can be one Kubernetes Secret):

    DIR/server.key  DIR/server.key_secret      the server pair: every worker that binds holds its secret
    DIR/<role>.key  DIR/<role>.key_secret      one pair per role: source, layer, sleep, sink, monitor, viewer

A process needs the public keys (DIR/*.key), its own role's secret and, if it binds, the server's secret: nothing
else (deploy/k8s mounts exactly that, one Secret per role). There is no shared "worker" pair: a key directory made
before roles (its worker.key) is refused for what it would let every worker do, pass for any other.

The authenticator admits only the public keys DIR/*.key other than server.key, and each bound socket only the roles
that belong on it (ADMITTED): a worker's data sockets the workers, the monitor's XSUB the publishers of metrics, its
XPUB the viewers too. Delete a role's .key file to shut it out. Secret files must be mode 0600: a secret readable by
group or others is refused at load.

CURVE is off unless a directory is given (`security.curve_dir`, FFSTREAM_SECURITY_CURVE_DIR). With keys, every tcp
address is secured, loopback too: a socket bound on tcp://*:PORT is reached as tcp://127.0.0.1:PORT from its own host
(a published Docker port, `ffstream monitor` beside the stack), and both ends of a link must agree. ipc:// and
inproc:// never use it. With CURVE off, a bind on a non-loopback tcp address is refused (PlaintextRefused) unless the
config says `security.allow_plaintext`.

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
# One client pair per role. A worker uses the pair named for its kind; "viewer" is `ffstream monitor` or a dashboard
# on another host.
ROLES = ("source", "layer", "sleep", "sink", "monitor", "viewer")
DEFAULT_CLIENTS = ROLES  # what `ffstream keys generate` writes
# The pair every worker shared before roles: admitted nowhere, and refused as a worker's own pair in one line.
SHARED_WORKER = "worker"
WORKER_ROLES = frozenset({"source", "layer", "sleep", "sink"})  # the data plane: frames, negatives, `end`
# What each bound socket admits, by ZAP domain. A viewer reads metrics and nothing else.
ADMITTED = {
    "data": WORKER_ROLES,  # every socket a worker other than the monitor binds: frames, activity, negatives, snapshots
    "metrics-in": WORKER_ROLES | {"monitor"},  # the monitor's XSUB: workers publish their figures there
    "metrics-out": WORKER_ROLES | {"monitor", "viewer"},  # the monitor's XPUB: anyone with a key may read the figures
}

_enabled: dict[int, "Curve"] = {}  # id(context) -> its CURVE settings; one context per worker process
_plaintext: set[int] = set()  # id(context)s whose config allows non-loopback binds without CURVE


class PlaintextRefused(OSError):
    """A non-loopback tcp bind without CURVE, which the config does not allow; the message says what to set."""


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
    # Refused: any access by others, and group write. Group read is allowed: a Kubernetes Secret volume is root's,
    # and a non-root worker reads it through fsGroup (deploy/k8s mounts it 0440).
    mode = path.stat().st_mode & 0o777
    if need_secret and mode & 0o027:
        raise KeyFileError(f"secret key {path} is open to {'others' if mode & 0o007 else 'group writes'} (mode {mode:o}); chmod 600 it")
    return public, secret


def is_loopback(addr: str) -> bool:
    """True for addresses that need no CURVE when it is off: ipc, inproc, and tcp on loopback."""
    if not addr.startswith("tcp://"):
        return True
    host = addr[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


class Curve:
    """One process's keys, its authenticator (started with the first server socket) and its refusal count."""

    def __init__(self, ctx: zmq.Context, directory: str | os.PathLike, client: str, role: str | None = None):
        self.ctx = ctx
        self.role = role or client  # this process's role: it picks the ZAP domain of the sockets it binds
        self.directory = Path(directory)
        if client == SHARED_WORKER:
            raise KeyFileError(f"the shared {SHARED_WORKER!r} key pair is no longer used: each process uses its role's pair "
                               f"({', '.join(ROLES)}); make them with `ffstream keys generate {self.directory}`")
        self.server_public = _load(self.directory / f"{SERVER}.key", need_secret=False)[0]  # clients need the public key only
        self.server_secret: bytes | None = None  # loaded at the first bind: a process that binds nothing is not given it
        client_file = self.directory / f"{client}.key_secret"
        if not client_file.exists():
            raise KeyFileError(f"no key pair for {client!r} in {self.directory} ({client_file.name} missing); "
                               f"make one with `ffstream keys generate {self.directory}`")
        self.client_public, self.client_secret = _load(client_file, need_secret=True)
        self.roles = self.load_roles()  # public key (z85) -> role, the file's name
        self.authorized = {key for key, name in self.roles.items() if name in ROLES}
        if not self.authorized:
            raise KeyFileError(f"no client public keys (*.key other than {SERVER}.key) in {self.directory}")
        if SHARED_WORKER in self.roles.values():
            log.warning("%s: the shared %r key is admitted on no socket (one pair per role); delete it", self.directory / f"{SHARED_WORKER}.key",
                        SHARED_WORKER)
        self.refused = 0  # handshakes the authenticator denied
        self.admitted = 0
        self._auth: ThreadAuthenticator | None = None

    def load_roles(self) -> dict[bytes, str]:
        """Public key (z85) -> role, for every DIR/<role>.key except the server's."""
        return {_load(p, need_secret=False)[0]: p.stem for p in sorted(self.directory.glob("*.key")) if p.name != f"{SERVER}.key"}

    def domain_for(self, sock: zmq.Socket) -> str:
        """The ZAP domain of a socket this process binds: the monitor's two, or a worker's data socket."""
        if self.role == "monitor":
            return "metrics-out" if sock.type == zmq.XPUB else "metrics-in"
        return "data"

    # the ZAP credentials provider -----------------------------------------------------------------------
    def callback(self, domain: str, client_key: bytes) -> bool:
        """Called by the authenticator thread for each CURVE handshake; client_key is z85. Fails closed."""
        try:
            role = self.roles.get(client_key)
            if role is not None and role in ADMITTED.get(domain, ()):
                self.admitted += 1
                return True
            why = ("an unknown key" if role is None
                   else f"the shared {role!r} key, which no role owns (one pair per role)" if role == SHARED_WORKER
                   else f"the {role!r} key, which does not belong on a {domain!r} socket")
        except Exception as exc:  # noqa: BLE001 - a bug here must refuse, never admit
            why = f"an error ({exc!r})"
        self.refused += 1
        log.warning("refused a CURVE client with %s: %s (%d refused so far)", why, client_key.decode("ascii", "replace"), self.refused)
        return False

    # sockets ----------------------------------------------------------------------------------------------
    def secure(self, sock: zmq.Socket, bind: str | None, connect: list[str]) -> None:
        """Make `sock` a CURVE server (it binds a tcp address) or client (it connects to one). Loopback is no exception:
        the binding side cannot tell which of its clients come over loopback, so keys mean CURVE on every tcp link."""
        if bind and bind.startswith("tcp://"):
            if self.server_secret is None:
                self.server_public, self.server_secret = _load(self.directory / f"{SERVER}.key_secret", need_secret=True)
            self._start_authenticator()
            sock.curve_secretkey = self.server_secret
            sock.curve_publickey = self.server_public
            sock.curve_server = True
            sock.zap_domain = self.domain_for(sock).encode()
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP answer (the authenticator gone): refused, not admitted
        elif any(addr.startswith("tcp://") for addr in connect):
            sock.curve_secretkey = self.client_secret
            sock.curve_publickey = self.client_public
            sock.curve_serverkey = self.server_public

    def _start_authenticator(self) -> None:
        if self._auth is None:
            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("ffstream.net.security.zap"))
            self._auth.start()
            for domain in ADMITTED:  # a domain not listed gets "Unknown domain": refused
                self._auth.configure_curve_callback(domain=domain, credentials_provider=self)

    def close(self) -> None:
        """Stop the authenticator; it must go before the context terminates."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def enable(ctx: zmq.Context, directory: str | os.PathLike, client: str, role: str | None = None) -> Curve:
    """From now on make_socket(ctx, ...) uses CURVE on every tcp address, loopback included (ipc and inproc: never).

    client names the key pair (DIR/<client>.key_secret); role (default: client) what this process is, which decides
    what its bound sockets admit.
    """
    release(ctx)
    curve = _enabled[id(ctx)] = Curve(ctx, directory, client, role)
    log.info("CURVE on: keys from %s, client key %r, %d client keys admitted", directory, client, len(curve.authorized))
    return curve


def enabled(ctx: zmq.Context) -> Curve | None:
    return _enabled.get(id(ctx))


def allow_plaintext(ctx: zmq.Context) -> None:
    """Let make_socket(ctx, ...) bind non-loopback tcp without CURVE (security.allow_plaintext: a private network)."""
    _plaintext.add(id(ctx))


def release(ctx: zmq.Context) -> None:
    """Undo enable() and allow_plaintext(): stop the authenticator. Call before ctx.term() (Worker.close does)."""
    _plaintext.discard(id(ctx))
    curve = _enabled.pop(id(ctx), None)
    if curve is not None:
        curve.close()


def secure(ctx: zmq.Context, sock: zmq.Socket, bind: str | None, connect: str | list[str] | None) -> None:
    """The make_socket hook: CURVE if enable(ctx, ...) was called; else a non-loopback tcp bind is refused
    (PlaintextRefused) unless allow_plaintext(ctx) was. Connecting in plaintext is the binding side's choice."""
    curve = _enabled.get(id(ctx))
    if curve is not None:
        curve.secure(sock, bind, [connect] if isinstance(connect, str) else list(connect or []))
    elif bind and not is_loopback(bind) and id(ctx) not in _plaintext:
        raise PlaintextRefused(
            f"refusing to bind {bind} without CURVE: anyone who reaches it could send frames, negatives or end. "
            "Set security.curve_dir (FFSTREAM_SECURITY_CURVE_DIR, keys from `ffstream keys generate DIR`), bind on "
            "127.0.0.1, or on a private network set security.allow_plaintext (FFSTREAM_SECURITY_ALLOW_PLAINTEXT=true)")


def refused(ctx: zmq.Context) -> int:
    curve = _enabled.get(id(ctx))
    return curve.refused if curve else 0
