"""Service wiring: Tiled (embedded or remote), the broker and N local worker processes, from one config;
and :func:`subscribe` to attach the live callbacks to a user's RunEngine.

``xafs-stream serve`` calls :class:`Service`; a beamline's IPython profile calls :func:`subscribe`::

    from xafs_stream import subscribe
    session = subscribe(RE, "xafs-stream.toml")   # raw runs to Tiled, units to the broker
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .storage.tiled_server import (
    TiledHandle,
    connect_tiled,
    log_cause,
    start_embedded_tiled,
    start_tiled_process,
)
from .transport.security import check_binds

log = logging.getLogger(__name__)
API_KEY_ENV = "XAFS_STREAM_TILED_API_KEY"


class ServiceFailed(RuntimeError):
    """A component of the service keeps exiting and is not restarted any more (the message says which)."""


def open_tiled(config: Config, *, separate_process: bool = False, role: str = "read",
               lock_held: bool = False) -> TiledHandle:
    """Connect to ``[tiled] uri``, else to the Tiled of the ``serve`` running on the data directory
    (:mod:`.service_info`), else start the embedded server under the data directory (in this process, or in a
    child process with ``separate_process``) while holding the directory's ``serve.lock`` (as ``role``, the
    command named to anyone refused; ``lock_held``: the caller, ``serve``, holds it already). The lock is freed
    by ``close()``. A directory held by another process raises :class:`.service_info.ServiceRunning`."""
    if config.tiled.uri:
        return connect_tiled(config.tiled.uri, api_key=config.tiled.api_key or None)
    from .service_info import acquire_lock, read_info, release_lock

    running = read_info(config.data_dir)
    if running is not None:  # a serve owns this data directory: use its Tiled, never a second one
        return connect_tiled(running["tiled_uri"], api_key=running.get("api_key") or None)
    lock = None if lock_held else acquire_lock(config.data_dir, role)
    try:
        if separate_process:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            logs = config.data_dir / "logs"
            logs.mkdir(exist_ok=True)
            handle = start_tiled_process(config.data_dir, port=config.tiled.port,
                                         api_key=config.tiled.api_key or None, log_file=logs / "tiled.log")
        else:
            handle = start_embedded_tiled(config.data_dir, port=config.tiled.port,
                                          api_key=config.tiled.api_key or None)
    except BaseException:
        release_lock(lock)
        raise
    if lock is not None:
        handle.on_close = lambda: release_lock(lock)
    return handle


def check_startup(cfg: Config) -> None:
    """What would make ``serve`` fail half-way, checked before anything starts (one-line RuntimeError): a data
    directory that cannot be created or written, an API key the embedded Tiled refuses (Tiled accepts only
    letters and digits, so that the key survives in a URL)."""
    data = cfg.data_dir
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RuntimeError(f"data_dir {data} cannot be used: {exc.strerror or exc} (set [service] data_dir to a "
                           f"writable directory)") from None
    key = cfg.tiled.api_key or os.environ.get(API_KEY_ENV, "")
    if not cfg.tiled.uri and key and not key.isalnum():
        raise RuntimeError("[tiled] api_key: the embedded Tiled accepts only letters and digits (Tiled's rule, "
                           "so that the key can go into a URL); make one with "
                           "python -c 'import secrets; print(secrets.token_hex(32))'")


def check_ports_free(addresses: dict[str, str]) -> None:
    """Fail in one line, before anything starts, when a fixed TCP port to bind is taken (``tcp://host:port``;
    port 0 or ``*`` hosts are probed on all interfaces)."""
    import socket

    for what, addr in addresses.items():
        if not addr or not addr.startswith("tcp://"):
            continue
        host, _, port = addr[len("tcp://"):].rpartition(":")
        if not port.isdigit() or int(port) == 0:
            continue
        host = "" if host in ("*", "0.0.0.0") else host.strip("[]")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds: TIME_WAIT is no conflict
            try:
                sock.bind((host, int(port)))
            except OSError as exc:
                raise RuntimeError(f"{what} {addr}: {exc.strerror or exc} (another process listens there; "
                                   f"free the port or change [broker] in the configuration)") from None


def _python_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "xafs_stream.cli.main", *args]


@dataclass
class Service:
    """Broker + workers (+ embedded Tiled). Use as a context manager or call :meth:`start`/:meth:`stop`."""

    config: Config
    tiled: TiledHandle | None = None
    broker_proc: subprocess.Popen | None = None
    worker_procs: list[subprocess.Popen] = field(default_factory=list)
    frontend: str = ""
    backend: str = ""
    events: str = ""  # the broker's result-events address (subscribe with xafs_stream.ResultEvents)
    _config_file: str = ""
    log_dir: Path | None = None
    dashboard: Any = None
    _restarts: dict[str, list[float]] = field(default_factory=dict)  # component -> monotonic restart times
    _retry_at: dict[str, float] = field(default_factory=dict)  # component -> when to try a failed start again
    _retry_delay: dict[str, float] = field(default_factory=dict)  # component -> its current back-off, s
    _lock: int | None = None  # the data directory's serve.lock (service_info)
    info_file: Path | None = None  # service.json while running

    @classmethod
    def from_file(cls, path: str | Path | None = None, **overrides: dict[str, Any]) -> "Service":
        return cls(load_config(path, overrides=overrides))

    def start(self, *, reconcile: bool = True) -> "Service":
        """Check the configuration (ConfigError naming a misspelt setting or analysis, before anything
        starts), then start Tiled, the broker, the workers and the dashboard."""
        from .analyses.registry import load_registry

        cfg = self.config
        load_registry(cfg.worker.plugins).check_config(cfg.analysis, cfg.worker.analyses)
        if cfg.service.slow_workers:
            cfg.broker.lanes = True  # the last slow_workers workers serve the slow lane
        b = cfg.broker
        check_binds({"frontend": b.frontend, "backend": b.backend, "events": b.events}, cfg.security.keys,
                    cfg.security.allow_insecure)
        from .service_info import acquire_lock

        if cfg.dashboard.enabled:
            from .web.guard import check_exposure

            check_exposure(cfg.dashboard, cfg.security)
        check_startup(cfg)
        self._lock = acquire_lock(cfg.data_dir)  # one serve per data directory (before any port is probed)
        try:
            ports = {"broker frontend": b.frontend, "broker backend": b.backend, "broker events": b.events}
            if not cfg.tiled.uri and cfg.tiled.port:
                ports["embedded Tiled"] = f"tcp://127.0.0.1:{cfg.tiled.port}"
            check_ports_free(ports)
        except RuntimeError:
            self.stop()
            raise
        try:
            return self._start(reconcile)
        except BaseException:  # a component failed to start: stop those already running, leave none behind
            self.stop()
            raise

    def _start(self, reconcile: bool) -> "Service":
        data = self.config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.log_dir = data / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.tiled = open_tiled(self.config, separate_process=True, lock_held=True)
        self.start_broker()
        self.worker_procs = [self.start_worker(f"w{i}") for i in range(self.config.service.workers)]
        if reconcile and self.config.service.reconcile_recent > 0:
            threading.Thread(target=self._reconcile, name="reconcile", daemon=True).start()
        if self.config.dashboard.enabled:
            from .web.server import start_dashboard

            d = self.config.dashboard
            for port in dict.fromkeys([d.port, 0]):  # the configured port, else any free one
                try:
                    self.dashboard = start_dashboard(self.tiled.client, self.frontend, replace(d, port=port),
                                                     self.config.security, events=self.events or None)
                    break
                except (RuntimeError, TimeoutError, OSError) as exc:  # e.g. the port is taken
                    log.warning("dashboard could not listen on %s:%s (%s)", d.host, port, exc)
        self.publish_info()
        return self

    def publish_info(self) -> None:
        """Write ``service.json`` (addresses, the Tiled key; owner-only) for clients on this file system."""
        from .service_info import write_info

        uri = self.tiled.uri.split("?")[0] if self.tiled else ""
        self.info_file = write_info(self.config.data_dir, {
            "tiled_uri": uri, "api_key": getattr(self.tiled, "api_key", "") or "",
            "frontend": self.frontend, "backend": self.backend, "events": self.events,
            "dashboard": getattr(self.dashboard, "link", "") if self.dashboard is not None else "",
        })

    def _write_config(self) -> str:
        if not self._config_file:
            fd, path = tempfile.mkstemp(prefix="xafs-stream-", suffix=".toml", dir=self.config.data_dir)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.config.to_toml())
            self._config_file = path
        return self._config_file

    def start_broker(self) -> None:
        """Start (or restart) the broker process and wait for its addresses."""
        b = self.config.broker
        ready = self.config.data_dir / "broker.ready"
        ready.unlink(missing_ok=True)
        cmd = _python_cli("broker", "--config", self._write_config(), "--ready-file", str(ready))
        logfile = open(self.log_dir / "broker.log", "ab")  # noqa: SIM115 - handed to the process
        self.broker_proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.broker_proc.poll() is not None:
                raise RuntimeError(f"broker did not start ({log_cause(self.log_dir / 'broker.log')}); "
                                   f"see {self.log_dir}/broker.log")
            if time.monotonic() > deadline:
                raise TimeoutError("broker did not start within 30 s")
            time.sleep(0.05)
        import json

        info = json.loads(ready.read_text())
        self.frontend, self.backend = info["frontend"], info["backend"]
        self.events = info.get("events", "")
        # later restarts must come back on the same ports
        b.frontend, b.backend, b.events = self.frontend, self.backend, self.events
        if self._config_file:
            Path(self._config_file).unlink(missing_ok=True)
        self._config_file = ""
        log.info("broker up: frontend %s backend %s events %s", self.frontend, self.backend, self.events or "(none)")

    def lane_of(self, i: int) -> str:
        """The lane of local worker ``i``: with lanes, the last ``[service] slow_workers`` serve the slow one."""
        s = self.config.service
        if not self.config.broker.lanes:
            return ""
        return "slow" if i >= s.workers - s.slow_workers else "fast"

    def start_worker(self, name: str, lane: str | None = None) -> subprocess.Popen:
        """Start one local worker process (``name`` ``w<i>``: its lane from :meth:`lane_of`)."""
        if lane is None:
            lane = self.lane_of(int(name[1:])) if name[1:].isdigit() else ""
        env = dict(os.environ)
        # one BLAS thread per worker: workers are the parallelism (measured: OpenBLAS threads made the SpM
        # tests 4x slower on 2 shared cores)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        if self.tiled is not None and self.tiled.api_key:
            env[API_KEY_ENV] = self.tiled.api_key
        uri = self.tiled.uri.split("?")[0] if self.tiled else self.config.tiled.uri
        cmd = _python_cli("worker", "--connect", self.backend, "--tiled-uri", uri, "--config", self._write_config(),
                          "--name", f"{name}-{os.getpid()}", "--lane", lane)
        logfile = open(self.log_dir / f"worker-{name}.log", "ab")  # noqa: SIM115
        return subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env)

    def supervise(self) -> list[str]:
        """Restart every component process that has exited: the embedded Tiled (same port and key), the
        broker (same addresses), each worker. Returns what was restarted, one line each; raises
        :class:`ServiceFailed` when a component exited more than ``[service] max_restarts`` times within
        ``restart_window_s`` (it cannot be kept alive: the operator must look)."""
        restarted = []
        server = getattr(self.tiled, "server", None)
        if isinstance(getattr(server, "proc", None), subprocess.Popen) and server.proc.poll() is not None:
            restarted.append(self._restart("Tiled", server.proc.returncode, "tiled.log", server.restart))
        if self.broker_proc is not None and self.broker_proc.poll() is not None:
            restarted.append(self._restart("broker", self.broker_proc.returncode, "broker.log", self.start_broker))
        for i, proc in enumerate(self.worker_procs):
            if proc.poll() is not None:
                def again(i: int = i) -> None:
                    self.worker_procs[i] = self.start_worker(f"w{i}")

                restarted.append(self._restart(f"worker w{i}", proc.returncode, f"worker-w{i}.log", again))
        return [line for line in restarted if line]

    def _restart(self, component: str, code: int | None, logname: str, start: Any) -> str:
        """Start ``component`` again (``start()``) unless it has used up its restarts; one line saying so.
        A start that fails (a full disk, a port still taken) counts as an exit; the next try waits for a
        back-off that doubles (1, 2, 4 ... 30 s), so a short outage does not use up the budget."""
        now = time.monotonic()
        if now < self._retry_at.get(component, 0.0):
            return ""
        self._count_restart(component, code, logname)
        try:
            start()
        except Exception as exc:
            delay = min(30.0, 2 * self._retry_delay.get(component, 0.5))
            self._retry_delay[component], self._retry_at[component] = delay, now + delay
            line = f"{component} exited with code {code} and could not be started again ({exc}); next try in " \
                   f"{delay:.0f} s"
            log.warning("%s", line)
            return line
        self._retry_delay.pop(component, None)
        self._retry_at.pop(component, None)
        line = f"{component} exited with code {code}; restarted"
        log.warning("%s", line)
        return line

    def _count_restart(self, component: str, code: int | None, logname: str) -> None:
        now = time.monotonic()
        times = [t for t in self._restarts.get(component, []) if now - t < self.config.service.restart_window_s]
        if len(times) >= self.config.service.max_restarts:
            raise ServiceFailed(f"{component} exited {len(times) + 1} times within "
                                f"{self.config.service.restart_window_s:g} s (last exit code {code}); "
                                f"see {self.log_dir / logname}")
        self._restarts[component] = [*times, now]

    def stop_broker(self, *, kill: bool = False) -> None:
        if self.broker_proc is not None and self.broker_proc.poll() is None:
            if kill:
                self.broker_proc.kill()
            else:
                self.broker_proc.terminate()
            self.broker_proc.wait(10)

    def status(self, timeout_s: float = 2.0) -> dict:
        from .transport.publisher import broker_status

        return broker_status(self.frontend, timeout_s=timeout_s, keys=self.config.security.keys or None)

    def wait_idle(self, timeout_s: float = 120.0, *, publisher: Any = None) -> bool:
        """Wait until the broker holds no pending or in-flight unit (and ``publisher`` has sent all)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if publisher is not None and len(publisher):
                time.sleep(0.1)
                continue
            try:
                st = self.status()
            except TimeoutError:
                time.sleep(0.2)
                continue
            if st["pending"] == 0 and st["inflight"] == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        for proc in self.worker_procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.worker_procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.stop_broker()
        if self.dashboard is not None:
            self.dashboard.close()
            self.dashboard = None
        if self.tiled is not None:
            self.tiled.close()
        if self._config_file:
            Path(self._config_file).unlink(missing_ok=True)
        if self._lock is not None:
            from .service_info import release_lock, remove_info

            remove_info(self.config.data_dir)
            release_lock(self._lock)
            self._lock = None

    def _reconcile(self) -> None:
        from .worker.reprocess import reconcile_recent

        try:
            n = reconcile_recent(self.tiled.client, self.frontend, self.config,
                                 limit=self.config.service.reconcile_recent)
            if n:
                log.info("reconcile: submitted %d missing unit(s) of recent runs", n)
        except Exception:
            log.exception("reconciling recent runs failed")

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Session:
    """What :func:`subscribe` attached to a RunEngine (keep it; call :meth:`close` at the end)."""

    RE: Any
    writer: Any
    publisher: Any
    tokens: list[int]
    spectra: Any
    tiles: Any
    tiled_client: Any = None  # the service's Tiled (raw runs and results; ``client[uid]``)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until raw data are in Tiled and every unit reached the broker."""
        if self.writer is not None:
            self.writer.flush(timeout_s)
        if self.publisher is not None:
            self.publisher.flush(timeout_s)

    def close(self) -> None:
        for token in self.tokens:
            self.RE.unsubscribe(token)
        if self.writer is not None:
            self.writer.close()
        if self.publisher is not None:
            self.publisher.close()


def subscribe(
    RE: Any,
    config: Config | str | Path | None = None,
    *,
    tiled_client: Any = None,
    frontend: str | None = None,
    write_raw: bool = True,
    live_processing: bool = True,
) -> Session:
    """Attach xafs-stream to a RunEngine: raw runs → Tiled (live), spectra and tiles → the broker.

    Parameters
    ----------
    RE : the user's RunEngine
    config : a :class:`Config` or a TOML path (default: defaults + environment)
    tiled_client : write raw runs here (default: ``[tiled] uri``, else the Tiled of the ``serve`` running on
        the configuration's data directory, found from its ``service.json``)
    frontend : broker frontend address (default: the running serve's, else ``[broker] frontend``)
    write_raw : subscribe the raw-run writer (off when another process already writes runs to Tiled)
    live_processing : subscribe the unit builders (off: runs can be processed later by ``reprocess``)
    """
    from .callbacks.units import MapTileBuilder, SpectrumUnitBuilder
    from .service_info import read_info
    from .storage.raw_writer import LiveTiledWriter
    from .transport.publisher import UnitPublisher

    cfg = config if isinstance(config, Config) else load_config(config)
    running = None if cfg.tiled.uri else read_info(cfg.data_dir)
    tokens: list[int] = []
    writer = publisher = spectra = tiles = None
    if tiled_client is None:
        if cfg.tiled.uri:
            tiled_client = connect_tiled(cfg.tiled.uri, api_key=cfg.tiled.api_key or None).client
        elif running is not None:
            tiled_client = connect_tiled(running["tiled_uri"], api_key=running.get("api_key") or None).client
    if frontend is None and running is not None:
        frontend = running.get("frontend") or None
    if write_raw:
        if tiled_client is None:
            raise ValueError(f"subscribe: no running xafs-stream serve on {cfg.data_dir} (no service.json) and no "
                             f"[tiled] uri: start `xafs-stream serve` with the same configuration, or give "
                             f"tiled_client")
        writer = LiveTiledWriter(tiled_client, backup_directory=str(cfg.data_dir / "raw-backup"))
        tokens.append(RE.subscribe(writer))
    if live_processing:
        publisher = UnitPublisher(frontend or cfg.broker.frontend, cfg.data_dir / "outbox",
                                  keys=cfg.security.keys or None)
        submit = publisher.submit
        if writer is not None:
            def submit(envelope: Any) -> Any:
                writer.hold()  # its results are stored within ~0.2 s: raw appends wait for them
                return publisher.submit(envelope)
        spectra = SpectrumUnitBuilder(submit, announce=publisher.announce)
        tiles = MapTileBuilder(submit, announce=publisher.announce)
        tokens.append(RE.subscribe(spectra))
        tokens.append(RE.subscribe(tiles))
    return Session(RE=RE, writer=writer, publisher=publisher, tokens=tokens, spectra=spectra, tiles=tiles,
                   tiled_client=tiled_client)
