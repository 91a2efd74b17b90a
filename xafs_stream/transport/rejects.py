"""Rejected messages: counted per peer and reason, logged at a bounded rate, never echoed at length.

Hostile or broken peers can send thousands of bad messages a second. Logging each one in full would let
them fill the disk (a 900 kB field echoed per reject), so :class:`RejectLog` logs the first few of each
interval with their reasons cut short, counts the rest per (peer, reason), and writes one summary line per
interval. The last few reasons stay available for the broker's status.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque

#: characters of a reason or peer name kept in logs and status
MAX_FIELD = 200


def clip(text: str, limit: int = MAX_FIELD) -> str:
    """``text`` cut to ``limit`` characters (``...`` marks the cut)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RejectLog:
    """Count and log rejected messages at a bounded rate.

    Parameters
    ----------
    logger : where the lines go (WARNING)
    interval_s : length of one counting interval, s
    examples : rejects logged in full (clipped) per interval; the rest only counted
    keys : distinct (peer, reason) pairs counted per interval; more are counted as "other"
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0, examples: int = 5, keys: int = 50):
        self.logger = logger
        self.interval_s = float(interval_s)
        self.examples = int(examples)
        self.keys = int(keys)
        self.total = 0
        self.recent: deque[str] = deque(maxlen=10)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._logged = 0
        self._start = time.monotonic()

    def reject(self, peer: bytes | str, reason: str) -> None:
        """One rejected message from ``peer`` (an identity) for ``reason``."""
        now = time.monotonic()
        if now - self._start >= self.interval_s:
            self.flush(now)
        name = clip(peer.decode(errors="replace") if isinstance(peer, bytes) else str(peer), 64)
        reason = clip(reason)
        self.total += 1
        self.recent.append(f"{name}: {reason}")
        kind = reason.split(":", 1)[0][:60]
        key = (name, kind) if (name, kind) in self._counts or len(self._counts) < self.keys else ("other", "other")
        self._counts[key] += 1
        if self._logged < self.examples:
            self._logged += 1
            self.logger.warning("rejected message from %s: %s", name, reason)

    def flush(self, now: float | None = None) -> None:
        """Log the interval's summary (if more was rejected than logged) and start a new interval."""
        n = sum(self._counts.values())
        if n > self._logged:
            top = ", ".join(f"{peer} {kind!r} x{count}" for (peer, kind), count in self._counts.most_common(5))
            self.logger.warning("rejected %d message(s) in the last %.0f s (%d logged): %s", n,
                                (now or time.monotonic()) - self._start, self._logged, top)
        self._counts.clear()
        self._logged = 0
        self._start = now if now is not None else time.monotonic()
