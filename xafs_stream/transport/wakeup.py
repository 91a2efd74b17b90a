"""Wake a thread blocked in ``zmq.Poller.poll`` from another thread (a self-pipe).

Without it, a socket thread notices work handed over by another thread (a finished unit, a new
submission) only when its poll times out: measured here, a 100 ms poll capped a worker at ~10 units/s.
"""

from __future__ import annotations

import os
import threading


class Waker:
    """``wake()`` from any thread; register ``fileno()`` in a poller; ``drain()`` after it fires. After
    :meth:`close`, ``wake()`` does nothing (a descriptor number closed here may already belong to another
    file: writing to it would corrupt that file)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self._r

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._w, b"x")
            except BlockingIOError:  # the pipe is full: a wake-up is already pending
                pass

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._r, self._w):
                try:
                    os.close(fd)
                except OSError:
                    pass
