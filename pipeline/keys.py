"""CURVE keys for graphs that span machines: who may read an output over tcp, and how.

An output read on another host crosses a network carrying a camera's frames and a microphone's
sound, so every tcp endpoint that leaves the machine is encrypted and authenticated with CURVE
(CurveZMQ: each connection's traffic is encrypted with keys of its own). Each host of a graph has
one keypair, made by ``launch.py keys DIR CONFIG`` (``zmq.auth.create_certificates``):

* ``DIR/<host>.key`` — the public key: every host that talks to this one needs a copy;
* ``DIR/<host>.key_secret`` — the secret key: it stays on its own host (mode 0600).

The publisher of an output is the CURVE server and proves it holds its host's secret key (its
readers know its public key). A ZAP handler (``zmq.auth``) in the publishing process lets in only
clients whose public key belongs to a host that reads that output; anyone else — another key, a
plaintext client — gets nothing, and key refusals are logged (the first, then a count every
``LOG_EVERY_S``). Loopback and ipc stay as they are and need no keys; a graph whose endpoint
leaves the machine and has no keys does not start.

The supervisor decides before any process starts which endpoints need CURVE and checks that the
key files are there (:func:`plan`, one line if not), writes that plan into the run directory and
names it in each node's environment; each socket looks its endpoint up as `pipeline.transport`
creates it (:func:`secure_socket`). No key is ever logged: lines name hosts and files, never keys,
and the plan holds file names, not keys.

A graph without ``hosts:`` has one host, :data:`LOCAL`, for its explicit remote endpoints.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.base import Authenticator

from pipeline.graph import GraphSpec, is_loopback

log = logging.getLogger("earshot.keys")

#: the host name of a graph without ``hosts:``
LOCAL = "local"
#: environment of a node process: the run's plan (a JSON file) and the host whose keys it uses
PLAN_ENV, IDENTITY_ENV = "EARSHOT_CURVE_PLAN", "EARSHOT_CURVE_AS"
#: a publisher logs at most one line of refused clients per this many seconds
LOG_EVERY_S = 10.0
#: ZMTP heartbeats on sockets that leave the machine: a peer that vanished without closing (a
#: box switched off, a cable pulled) is dropped after HEARTBEAT_TIMEOUT_MS, so a reader reconnects
#: when its publisher's host comes back instead of waiting on a dead connection for hours
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 1000, 5000


class KeysMissing(ValueError):
    """An endpoint that leaves the machine and no usable keys for it; the message is one line."""


class InsecureEndpoint(RuntimeError):
    """A socket was about to use a remote tcp endpoint that no plan secured (a bug, not a config)."""


def identity(graph: GraphSpec, node: str) -> str:
    """The host whose keypair node ``node`` uses."""
    return graph.nodes[node].host or LOCAL


def hosts_of(graph: GraphSpec) -> list[str]:
    """The hosts ``launch.py keys`` makes keypairs for."""
    return list(graph.hosts) or [LOCAL]


def tcp_address(endpoint: str) -> str | None:
    """The host part of a ``tcp://`` endpoint, None for any other transport."""
    scheme, _, rest = endpoint.partition("://")
    return rest.rpartition(":")[0].strip("[]") if scheme == "tcp" else None


def leaves_machine(endpoint: str) -> bool:
    address = tcp_address(endpoint)
    return address is not None and not is_loopback(address)


# -- making keys -------------------------------------------------------------------------------

def generate(keys_dir: str | Path, hosts: list[str]) -> list[tuple[str, str]]:
    """A keypair per host in ``keys_dir`` (created 0700), secret files 0600. Returns (host, what
    happened) per host: ``made``; ``kept``, a keypair already there (making it anew would lock that
    host out of every other that knows its old key); ``public only``, another host's public key
    copied here, whose secret is on that host and must not be replaced by a new pair."""
    keys_dir = Path(keys_dir).expanduser()
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    done = []
    for host in hosts:
        public, secret = keys_dir / f"{host}.key", keys_dir / f"{host}.key_secret"
        if secret.exists():
            os.chmod(secret, 0o600)
            done.append((host, "kept"))
        elif public.exists():
            done.append((host, "public only"))
        else:
            umask = os.umask(0o077)  # the secret file is 0600 from its first byte (then the public one 0644)
            try:
                public_path, _ = zmq.auth.create_certificates(keys_dir, host)
            finally:
                os.umask(umask)
            os.chmod(public_path, 0o644)
            done.append((host, "made"))
    return done


def _public_key(keys_dir: Path, host: str) -> bytes:
    return _load(keys_dir / f"{host}.key", secret=False)[0]


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    """A certificate file's keys, or KeysMissing naming the file (never its content)."""
    how = f"make it with `python launch.py keys {path.parent} CONFIG` on that host" if secret else \
        "copy it from its host (`python launch.py keys DIR CONFIG` made it there)"
    if not path.is_file():
        raise KeysMissing(f"keys: {path} is missing; {how}")
    if secret:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeysMissing(f"keys: {path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise KeysMissing(f"keys: {path} is not a ZeroMQ certificate ({type(exc).__name__})") from None
    if secret and not secret_key:
        raise KeysMissing(f"keys: {path} holds no secret key")
    return public, secret_key


# -- the run's plan ----------------------------------------------------------------------------

def plan(graph: GraphSpec) -> dict[str, Any]:
    """Which tcp endpoints of this run use CURVE, and with whose keys; checks every key file this
    host needs. Endpoints must be resolved (at least their tcp part). Raises KeysMissing.

    CURVE guards every endpoint that leaves the machine (required) and every output that crosses
    hosts when keys are given (loopback hosts, for trying a split on one box)."""
    keys_dir = Path(graph.settings.keys_dir).expanduser().resolve() if graph.settings.keys_dir else None
    endpoints: dict[str, dict[str, Any]] = {}
    for name, node in graph.nodes.items():
        for port, endpoint in node.endpoints.items():
            if tcp_address(endpoint) is None:
                continue
            readers = graph.readers(name, port)
            here = [n for n in (name, *readers) if graph.runs_here(n)]
            if not here or not (leaves_machine(endpoint) or (keys_dir and graph.crosses_hosts(name, port))):
                continue
            if keys_dir is None:
                raise KeysMissing(
                    f"node {name!r} output {port!r}: {endpoint} leaves this machine and the graph has no keys "
                    f"for CURVE; make them with `python launch.py keys DIR {graph.source}` and run with --keys DIR "
                    f"(or settings.keys_dir)")
            if not keys_dir.is_dir():
                raise KeysMissing(f"keys: {keys_dir} is not a directory; make it with "
                                  f"`python launch.py keys {keys_dir} {graph.source}`")
            server, clients = identity(graph, name), sorted({identity(graph, r) for r in readers})
            if graph.runs_here(name):  # we serve it: our secret, the readers' public keys
                _load(keys_dir / f"{server}.key_secret", secret=True)
                for client in clients:
                    _public_key(keys_dir, client)
            for reader in readers:
                if graph.runs_here(reader):  # we read it: our secret, the publisher's public key
                    _load(keys_dir / f"{identity(graph, reader)}.key_secret", secret=True)
                    _public_key(keys_dir, server)
            endpoints[endpoint] = {"server": server, "clients": clients}
    return {"keys_dir": str(keys_dir or ""), "endpoints": endpoints}


# -- in a node's process -----------------------------------------------------------------------

_plan_cache: dict[str, Any] | None = None


def _the_plan() -> dict[str, Any]:
    global _plan_cache
    if _plan_cache is None:
        path = os.environ.get(PLAN_ENV)
        _plan_cache = json.loads(Path(path).read_text()) if path else {"keys_dir": "", "endpoints": {}}
    return _plan_cache


def secure_socket(socket: zmq.Socket, endpoint: str, *, server: bool) -> None:
    """Called by `pipeline.transport` before a socket binds (``server``) or connects: CURVE and
    ZMTP heartbeats if the run's plan names the endpoint; nothing for ipc and loopback tcp. A
    remote tcp endpoint the plan does not name is refused (InsecureEndpoint), never used in clear."""
    entry = _the_plan()["endpoints"].get(endpoint)
    if entry is None:
        if leaves_machine(endpoint):
            raise InsecureEndpoint(f"{endpoint} leaves this machine and the run planned no CURVE keys for it")
        return
    keys_dir, me = Path(_the_plan()["keys_dir"]), os.environ.get(IDENTITY_ENV, LOCAL)
    public, secret = _load(keys_dir / f"{me}.key_secret", secret=True)
    socket.curve_publickey, socket.curve_secretkey = public, secret
    socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    if server:
        # certificate files hold z85 text, and zmq.auth hands the callback z85 keys too
        _gatekeeper(socket.context).admit(endpoint, {_public_key(keys_dir, host) for host in entry["clients"]})
        socket.zap_domain = endpoint.encode()
        socket.curve_server = True
    else:
        socket.curve_serverkey = _public_key(keys_dir, entry["server"])


#: one ZAP handler per context (ZeroMQ asks the handler bound in the socket's own context)
_gatekeepers: dict[int, tuple[zmq.Context, _Gatekeeper]] = {}
_lock = threading.Lock()


def _gatekeeper(ctx: zmq.Context) -> _Gatekeeper:
    with _lock:
        known = _gatekeepers.get(id(ctx))
        if known is None or known[0] is not ctx:
            known = _gatekeepers[id(ctx)] = (ctx, _Gatekeeper(ctx))
        return known[1]


#: zmq.auth logs client keys at debug level: its own logger stays silent whatever EARSHOT_LOG says
_zmq_auth_log = logging.getLogger("earshot.keys.zap")
_zmq_auth_log.setLevel(logging.CRITICAL + 1)
_zmq_auth_log.propagate = False


class _Gatekeeper(Authenticator):
    """zmq.auth's ZAP handler, in a thread of its own that ends with its context.

    Not ``zmq.auth.thread.ThreadAuthenticator``: its thread leaves the ZAP socket open when the
    context is terminated, so the node's ``ctx.term()`` at exit would wait for it forever. Here a
    terminated context ends the thread, which closes its socket."""

    def __init__(self, ctx: zmq.Context) -> None:
        super().__init__(ctx, log=_zmq_auth_log)
        self.allowed: dict[str, set[bytes]] = {}  # ZAP domain (the endpoint) → z85 public keys
        self.refused: dict[str, int] = {}
        self._peer = ""
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        ready, failed = threading.Event(), []
        self.thread = threading.Thread(target=self._serve, args=(ready, failed), name="earshot-zap", daemon=True)
        self.thread.start()
        ready.wait(10)
        if failed or not self.zap_socket:
            raise RuntimeError(f"cannot start the ZAP handler: {failed[0] if failed else 'it did not start'}")
        atexit.register(self._say_total)

    def admit(self, domain: str, keys: set[bytes]) -> None:
        """Clients of endpoint ``domain`` may be exactly these (z85) public keys."""
        self.allowed[domain] = set(keys)
        self.configure_curve_callback(domain, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth's credentials provider: is this client's key one we know for the endpoint?"""
        if key in self.allowed.get(domain, ()):
            return True
        self.refused[domain] = self.refused.get(domain, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(domain, -LOG_EVERY_S) >= LOG_EVERY_S:
            more = self._unlogged.pop(domain, 0)
            log.warning("output %s: refused a client at %s: its CURVE key is not one of the hosts that read this "
                        "output (%d refused so far%s; the next %.0f s are only counted)", domain, self._peer or "?",
                        self.refused[domain], f", {more} since the last line" if more else "", LOG_EVERY_S)
            self._logged_at[domain] = now
        else:
            self._unlogged[domain] = self._unlogged.get(domain, 0) + 1
        return False

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._peer = msg[3].decode("ascii", "replace") if len(msg) > 3 else ""  # the client's IP address
        await super().handle_zap_message(msg)

    def _serve(self, ready: threading.Event, failed: list[str]) -> None:
        loop = asyncio.new_event_loop()
        try:
            try:
                self.start()  # binds the ZAP endpoint of this context, from this thread that uses it
            except zmq.ZMQError as exc:
                failed.append(str(exc))
                return
            finally:
                ready.set()
            while True:
                try:
                    request = self.zap_socket.recv_multipart()
                    handled = self.handle_zap_message(request)
                    if inspect.isawaitable(handled):
                        loop.run_until_complete(handled)
                except zmq.ZMQError:  # the context is terminating (ETERM): the node is closing
                    break
        finally:
            if self.zap_socket is not None:
                self.zap_socket.close(linger=0)
                self.zap_socket = None
            loop.close()

    def _say_total(self) -> None:
        for domain, n in self.refused.items():
            log.warning("output %s: refused %d client connection(s) in all (keys not allowed to read it)", domain, n)
