"""The dashboard's HTTP app (FastAPI): the page, its static files, a JSON API over Tiled and a live stream.

Routes (all GET)::

    /                                              the page (static/index.html)
    /static/...                                    scripts, styles, vendored uPlot
    /api/health                                    {"ok": true, "epoch": ..., "cursor": ...}
    /api/runs?limit=50&q=text                      newest runs first (state, analysis status, flags)
    /api/runs/{uid}                                one run: progress, summary, result metadata tree
    /api/runs/{uid}/raw                            μ(E) per repeat from the event table (live)
    /api/runs/{uid}/adaptive                       an adaptive scan: decisions, points, posterior band, verdict
    /api/runs/{uid}/results/{analysis}/{unit}      metadata, arrays as JSON (?names=a,b to pick; ?arrays=false
                                                   for none), names of the stored PNGs
    /api/runs/{uid}/results/{analysis}/{unit}/png/{name}   a stored PNG (image/png)
    /api/status                                    latest watcher snapshot: broker, active runs, errors
    /api/changes?since=N&wait_s=20                 long poll: changes after cursor N
    /api/stream                                    Server-Sent Events: "hello", "change", "status", "reset"

Errors are JSON ``{"detail": "..."}``: 404 for an unknown run/result/array, 503 when Tiled does not answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..storage.layout import ResultIncomplete
from .catalog import Catalog, NotFound
from .feed import ChangeFeed
from .guard import LOOPBACK_NAMES, Guard

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: longest a long-poll request waits, s
MAX_WAIT_S = 25.0
#: a comment line is sent on an idle stream this often, s (keeps proxies from closing it)
KEEPALIVE_S = 15.0


def build_app(catalog: Catalog, feed: ChangeFeed, *, closing: threading.Event | None = None,
              stream_tick_s: float = 0.2, hosts: set[str] | None = None, token: str = "") -> FastAPI:
    """The FastAPI app over ``catalog`` (reads) and ``feed`` (live changes; filled by a Watcher).

    ``closing`` set → open streams end (so the server can stop); ``stream_tick_s`` is how often a stream
    looks at the feed; ``hosts`` the names accepted in the Host header (default: loopback names), ``token``
    the token every client must present (see :mod:`xafs_stream.web.guard`).
    """
    closing = closing or threading.Event()
    # no Swagger/ReDoc pages: they load their scripts from a CDN, and this app must work offline
    app = FastAPI(title="xafs-stream dashboard", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ResultIncomplete)
    async def _incomplete(request: Request, exc: ResultIncomplete) -> JSONResponse:
        # a result read between its node's creation and its data's arrival: the page asks again shortly
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    app.add_middleware(_BackendErrors)
    app.add_middleware(Guard, hosts=hosts if hosts is not None else set(LOOPBACK_NAMES), token=token)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "epoch": feed.epoch, "cursor": feed.cursor}

    @app.get("/api/runs")
    def runs(limit: int = Query(50, ge=1, le=500), q: str = "") -> dict[str, Any]:
        return {"runs": catalog.runs(limit, text=q)}

    @app.get("/api/runs/{uid}")
    def run(uid: str) -> dict[str, Any]:
        return catalog.run(uid)

    @app.get("/api/runs/{uid}/raw")
    def raw(uid: str) -> dict[str, Any]:
        return catalog.raw_spectra(uid)

    @app.get("/api/runs/{uid}/adaptive")
    def adaptive(uid: str) -> dict[str, Any]:
        return catalog.adaptive(uid)

    @app.get("/api/runs/{uid}/results/{analysis}/{unit}")
    def result(uid: str, analysis: str, unit: str, names: str = "", arrays: bool = True) -> dict[str, Any]:
        return catalog.result(uid, analysis, unit, [n for n in names.split(",") if n] or None, arrays=arrays)

    @app.get("/api/runs/{uid}/results/{analysis}/{unit}/png/{name}")
    def png(uid: str, analysis: str, unit: str, name: str) -> Response:
        return Response(catalog.png(uid, analysis, unit, name), media_type="image/png",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return {**feed.status, "cursor": feed.cursor, "epoch": feed.epoch}

    @app.get("/api/changes")
    def changes(since: int = Query(0, ge=0), wait_s: float = Query(0.0, ge=0.0)) -> dict[str, Any]:
        if wait_s > 0 and feed.cursor <= since:
            feed.wait(since, min(wait_s, MAX_WAIT_S))
        items, lost = feed.since(since)
        return {"epoch": feed.epoch, "cursor": feed.cursor, "changes": items, "reset": lost}

    @app.get("/api/stream")
    async def stream(request: Request, since: int | None = None) -> StreamingResponse:
        cursor, reset = _resume_cursor(feed, request.headers.get("last-event-id"), since)
        return StreamingResponse(_events(request, feed, cursor, reset, closing, stream_tick_s),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


class _BackendErrors:
    """ASGI middleware: what escapes a route is mostly Tiled not answering (httpx errors) or answering with an
    error; the page gets one line of JSON (503), the log one line, nobody a traceback. (A plain ASGI class,
    not ``@app.middleware``: that wrapper breaks disconnect detection of the event stream.)"""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            log.warning("dashboard %s: %s: %s", scope.get("path"), type(exc).__name__, exc)
            response = JSONResponse({"detail": f"backend unavailable: {type(exc).__name__}: {exc}"}, status_code=503)
            await response(scope, receive, send)


def _resume_cursor(feed: ChangeFeed, last_event_id: str | None, since: int | None) -> tuple[int, bool]:
    """Where a (re)connecting stream starts: after ``Last-Event-ID`` (``<epoch>-<cursor>``) of this server's
    epoch, else after ``since``, else now. An id from another epoch means a restarted server: reset."""
    if last_event_id:
        epoch, _, number = last_event_id.partition("-")
        if epoch == feed.epoch and number.isdigit():
            return int(number), False
        return feed.cursor, True
    if since is not None:
        return int(since), False
    return feed.cursor, False


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


async def _events(request: Request, feed: ChangeFeed, cursor: int, reset: bool, closing: threading.Event,
                  tick_s: float):
    yield "retry: 2000\n\n"
    yield _sse("hello", {"epoch": feed.epoch, "cursor": cursor}, f"{feed.epoch}-{cursor}")
    if reset:
        yield _sse("reset", {"reason": "server restarted or changes lost"}, f"{feed.epoch}-{feed.cursor}")
        cursor = feed.cursor
    status_version = -1
    idle = 0.0
    while not closing.is_set():
        if await request.is_disconnected():
            break
        sent = False
        items, lost = feed.since(cursor)
        if lost:
            cursor = feed.cursor
            yield _sse("reset", {"reason": "changes fell out of the buffer"}, f"{feed.epoch}-{cursor}")
            sent = True
        for item in items:
            cursor = item["id"]
            yield _sse("change", item, f"{feed.epoch}-{cursor}")
            sent = True
        if feed.status_version != status_version:
            status_version = feed.status_version
            yield _sse("status", {**feed.status, "cursor": feed.cursor})
            sent = True
        idle = 0.0 if sent else idle + tick_s
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield ": keepalive\n\n"
        await asyncio.sleep(tick_s)
