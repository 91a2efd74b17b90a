"""Run the dashboard in a background thread of the calling process (``Service.start``, ``xafs-stream serve``,
``xafs-stream dashboard``)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote
from typing import Any, Self

from ..config import DashboardConfig, SecurityConfig
from .catalog import Catalog
from .feed import ChangeFeed, Watcher
from .guard import check_exposure, host_names

log = logging.getLogger(__name__)


@dataclass
class DashboardHandle:
    """A running dashboard: open :attr:`link` in a browser; :meth:`close` stops the server and the watcher."""

    url: str
    host: str
    port: int
    feed: ChangeFeed
    catalog: Catalog
    token: str = field(repr=False, default="")

    @property
    def link(self) -> str:
        """:attr:`url` with the token, for a browser (its answer sets a cookie that keeps the page allowed)."""
        return f"{self.url}?token={quote(self.token)}" if self.token else self.url
    _server: Any = field(repr=False, default=None)
    _thread: threading.Thread | None = field(repr=False, default=None)
    _watcher: Watcher | None = field(repr=False, default=None)
    _closing: threading.Event = field(repr=False, default_factory=threading.Event)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop serving (open event streams end) and stop polling; safe to call twice."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
            self.catalog.close()
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout_s)
            self._server = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_dashboard(tiled_client: Any, frontend: str | None, config: DashboardConfig | None = None,
                    security: SecurityConfig | None = None, *, events: str | None = None,
                    startup_timeout_s: float = 30.0) -> DashboardHandle:
    """Serve the live dashboard over ``tiled_client`` (the catalog root) in a background thread.

    Parameters
    ----------
    tiled_client : Tiled container client of the catalog root (raw runs and ``xafs_results``)
    frontend : the broker's frontend address (worker health and queue), or None/"" without a broker
    config : the ``[dashboard]`` settings: ``host``, ``port`` (0: any free port; see ``handle.url``),
        ``interval_s``, how often the watcher polls Tiled and the broker (new results show within about
        this), ``token`` and ``allowed_hosts`` (see :mod:`xafs_stream.web.guard`)
    security : ``[security]``: the CURVE keys for broker status queries; ``allow_insecure`` lets the
        dashboard listen beyond loopback without a token (ConfigError otherwise)
    events : the broker's result-events address: results then reach the page when announced, and Tiled is
        not polled for them (only rescanned now and then); None: results are found by polling
    startup_timeout_s : give up if the server is not listening by then

    Returns
    -------
    DashboardHandle with ``url`` and ``close()``
    """
    import uvicorn

    from ..transport.publisher import broker_status
    from .app import build_app

    config = config or DashboardConfig()
    security = security or SecurityConfig()
    host, port, interval_s = config.host, config.port, config.interval_s
    check_exposure(config, security)
    keys = security.keys or None

    catalog = Catalog(tiled_client)
    feed = ChangeFeed()
    closing = threading.Event()
    status_fn = (lambda: broker_status(frontend, timeout_s=min(2.0, max(0.5, interval_s)), keys=keys)
                 ) if frontend else None
    subscription = None
    if events:
        from ..transport.events import ResultEvents

        subscription = ResultEvents(events, keys=keys)
    watcher = Watcher(catalog, feed, broker_status=status_fn, interval_s=interval_s, events=subscription)
    app = build_app(catalog, feed, closing=closing, hosts=host_names(host, config.allowed_hosts),
                    token=config.token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning",
                                          loop="asyncio", lifespan="off", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="dashboard-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"dashboard server on {host}:{port} did not start (port in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"dashboard server did not start within {startup_timeout_s} s")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    watcher.start()
    handle = DashboardHandle(url=f"http://{shown}:{bound}/", host=host, port=int(bound), feed=feed,
                             catalog=catalog, token=config.token, _server=server, _thread=thread,
                             _watcher=watcher, _closing=closing)
    log.info("dashboard at %s", handle.url)
    return handle
