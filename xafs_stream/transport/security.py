"""Authenticated, encrypted transport: ZeroMQ CURVE keys and the broker's ZAP handler.

``xafs-stream keys DIR`` makes one key pair for the broker and one per role (:func:`create_keys`)::

    DIR/broker.key      DIR/broker.key_secret       the broker (server) keys
    DIR/producer.key    DIR/producer.key_secret     RunEngine sessions, reprocess --via-broker, status queries
    DIR/worker.key      DIR/worker.key_secret       analysis workers
    DIR/reader.key      DIR/reader.key_secret       result-event readers (dashboards, notebooks, watch)

``[security] keys = "DIR"`` in the TOML turns CURVE on for every socket. The broker's ZAP handler admits
on each socket only the keys of the roles that belong there: producers on the frontend, workers on the
backend, readers and producers (an adaptive plan reads events) on the events socket. A peer without a key,
or with another role's key, never completes the handshake: it cannot submit, fetch, acknowledge or
publish. Each host needs only the files of its roles (the ``.key_secret`` of its own role and the public
``.key`` files); the secret files are written readable by their owner only.

Without keys, sockets are plain TCP, which is allowed only on loopback (:func:`check_binds`): a service
that binds beyond loopback without keys refuses to start unless ``[security] allow_insecure = true``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

import zmq

from ..config import ConfigError

log = logging.getLogger(__name__)

ROLES = ("producer", "worker", "reader")
#: ZAP domain of each broker socket → the roles admitted there
DOMAINS = {"frontend": ("producer",), "backend": ("worker",), "events": ("reader", "producer")}


class KeyFileError(ValueError):
    """A key file is missing or unreadable (the message names it and how to make keys)."""


def create_keys(directory: str | Path) -> list[Path]:
    """Make the broker's and each role's CURVE key pair in ``directory`` (refusing to overwrite); returns
    the files written."""
    import zmq.auth

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existing = [p.name for name in ("broker", *ROLES) for p in (directory / f"{name}.key",) if p.exists()]
    if existing:
        raise KeyFileError(f"{directory} already holds keys ({', '.join(existing)}); remove them or choose "
                        "another directory")
    written = []
    for name in ("broker", *ROLES):
        public, secret = zmq.auth.create_certificates(str(directory), name)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
    return written


def _load(directory: str | Path, name: str, *, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    path = Path(directory) / (f"{name}.key_secret" if secret else f"{name}.key")
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"CURVE key {path} cannot be read ({exc}); make keys with `xafs-stream keys DIR` and "
                        f"set [security] keys = \"DIR\"") from None
    if secret and secret_key is None:
        raise KeyFileError(f"CURVE key {path} holds no secret key")
    return public, secret_key


def secure_server(sock: zmq.Socket, keys: str | Path, domain: str) -> None:
    """Make ``sock`` (one of the broker's, before it binds) a CURVE server in ZAP ``domain``."""
    public, secret = _load(keys, "broker", secret=True)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    sock.zap_domain = domain.encode()


def secure_client(sock: zmq.Socket, keys: str | Path, role: str) -> None:
    """Make ``sock`` (before it connects) a CURVE client of the broker with ``role``'s keys."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    broker_public, _ = _load(keys, "broker", secret=False)
    public, secret = _load(keys, role, secret=True)
    sock.curve_serverkey = broker_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


class _RoleKeys:
    """ZAP callback: the public keys (Z85) of the roles admitted in each domain."""

    def __init__(self, keys: str | Path):
        self.allowed = {domain: {_load(keys, role, secret=False)[0] for role in roles}
                        for domain, roles in DOMAINS.items()}
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed.get(domain, ())
        if not ok:
            self.denied += 1
        return ok


def start_authenticator(context: zmq.Context, keys: str | Path) -> Any:
    """The ZAP handler of the broker's sockets (a thread on ``context``); ``.stop()`` it at the end."""
    import time

    from zmq.auth.thread import ThreadAuthenticator

    # The ZAP endpoint (inproc://zeromq.zap.01) is one per context; a broker stopped just before in this
    # process (a restart, a test) frees it only when libzmq's reaper thread has destroyed its socket, which
    # on a loaded machine comes a little after close(): wait for that instead of failing.
    deadline = time.monotonic() + 10.0
    while True:
        auth = ThreadAuthenticator(context, log=logging.getLogger(__name__ + ".zap"))
        try:
            auth.start()
            break
        except zmq.ZMQError as exc:
            auth.stop()
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    roles = _RoleKeys(keys)
    for domain in DOMAINS:
        auth.configure_curve_callback(domain, credentials_provider=roles)
    auth.role_keys = roles
    return auth


def is_loopback(address: str) -> bool:
    """Does a ZeroMQ address (``tcp://host:port``, ``ipc://``, ``inproc://``) stay on this machine?"""
    if not address.startswith("tcp://"):
        return True
    host = address[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: reachable from elsewhere
        return False


def check_binds(addresses: dict[str, str], keys: str, allow_insecure: bool) -> None:
    """ConfigError naming the first address that binds beyond loopback while no keys are configured (unless
    ``allow_insecure``)."""
    if keys or allow_insecure:
        return
    for name, address in addresses.items():
        if address and not is_loopback(address):
            raise ConfigError(f"[broker] {name} = {address!r} is reachable from other hosts but [security] keys "
                             f"is empty: make keys with `xafs-stream keys DIR` and set [security] keys = \"DIR\" "
                             f"(or set [security] allow_insecure = true to run without authentication)")
