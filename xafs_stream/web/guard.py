"""Who may talk to the dashboard: the Host header (against DNS rebinding) and, when set, a token.

A web page on another site can make the user's browser request ``http://127.0.0.1:8080`` under a host
name it controls that resolves to 127.0.0.1 (DNS rebinding). The browser then sends that name in the
``Host`` header, so requests whose Host is not one of this server's names are refused (400).

When the dashboard listens beyond loopback it needs a token (``[dashboard] token``). A client presents it
as ``Authorization: Bearer <token>``, or ``?token=<token>`` once (the answer sets a cookie, so the page's
own requests and its event stream carry it), or that cookie. Without it: 401.
"""

from __future__ import annotations

import hmac
import socket
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from fastapi.responses import JSONResponse

COOKIE = "xafs_dashboard_token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def check_exposure(config: Any, security: Any) -> None:
    """ConfigError when the dashboard (``[dashboard]``) would listen beyond loopback without a token, unless
    ``[security] allow_insecure``."""
    from ..config import ConfigError
    from ..transport.security import is_loopback

    if not config.token and not security.allow_insecure and not is_loopback(f"tcp://{config.host}:0"):
        raise ConfigError(f"[dashboard] host = {config.host!r} is reachable from other hosts but [dashboard] "
                          "token is empty: set a token (or [security] allow_insecure = true)")


def host_names(bound_host: str, extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The names a request's Host header may carry: loopback names, the address the server is bound to
    and, when it listens on every interface, this machine's names; plus ``extra`` (``[dashboard]
    allowed_hosts``, e.g. a reverse proxy's name)."""
    names = set(LOOPBACK_NAMES) | {h.lower() for h in extra}
    if bound_host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    else:
        names.add(bound_host.lower())
    return names


def _host_of(header: str) -> str:
    """``example.org:8080`` → ``example.org``; ``[::1]:8080`` → ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: Host header check, then token check (when a token is set)."""

    def __init__(self, app: Any, *, hosts: set[str], token: str = ""):
        self.app = app
        self.hosts = hosts
        self.token = token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if _host_of(headers.get("host", "")) not in self.hosts:
            return await JSONResponse({"detail": "Host header not allowed"}, status_code=400)(scope, receive, send)
        if not self.token:
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookies = SimpleCookie()
        offered = [headers.get("authorization", "").removeprefix("Bearer ").strip(),
                   (query.get("token") or [""])[0], cookies[COOKIE].value if COOKIE in cookies else ""]
        if not any(t and hmac.compare_digest(t.encode(), self.token.encode()) for t in offered):
            return await JSONResponse({"detail": "a dashboard token is required (?token=... or Authorization: "
                                                 "Bearer ...)"}, status_code=401)(scope, receive, send)
        if not (query.get("token") or [""])[0]:
            return await self.app(scope, receive, send)

        async def with_cookie(message: dict) -> None:  # remember the token given in the address
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        return await self.app(scope, receive, with_cookie)
