"""The embedded Tiled server stops in bounded time even while a client holds a request open.

A CI run's last teardown once waited for minutes on the session's server (uvicorn waits for every open
connection by default); this holds a POST whose body never arrives and checks that ``close`` returns and the
port is free afterwards."""

import socket
import threading
import time

from xafs_stream.storage.tiled_server import SHUTDOWN_FORCE_S, SHUTDOWN_GRACE_S, EmbeddedTiledServer


def test_close_returns_while_a_request_is_held_open(tmp_path):
    server = EmbeddedTiledServer(tmp_path / "tiled")
    port = server.port
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        # complete headers, a body announced but never sent: the server's handler waits for it
        held.sendall(b"POST /api/v1/metadata/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"partial\":")
        time.sleep(0.5)
        closer = threading.Thread(target=server.close, daemon=True)
        t0 = time.monotonic()
        closer.start()
        closer.join(timeout=SHUTDOWN_GRACE_S + SHUTDOWN_FORCE_S + 10)
        took = time.monotonic() - t0
        assert not closer.is_alive(), "close() did not return"
        assert took < SHUTDOWN_GRACE_S + SHUTDOWN_FORCE_S + 5
        # nothing listens on the port any more
        probe = socket.socket()
        try:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
        finally:
            probe.close()
    finally:
        held.close()
