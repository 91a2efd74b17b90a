"""xafs-stream: streaming XAFS and μ-XAFS analysis for bluesky beamlines, with results in Tiled.

Flow: simulated or real devices → bluesky documents → work units (``xafs_stream.callbacks``) →
ZeroMQ broker and workers (``transport``, ``worker``) → pure analysis engines (``engines``) → results in
Tiled (``storage``), read back by the faces (``client``, ``cli``, ``web``). See ``docs/architecture.md``.

The names a beamline session or a notebook needs are importable from here (each loaded on first use, so
``import xafs_stream`` stays light):

- :func:`subscribe`: attach the live callbacks to a RunEngine (:func:`xafs_stream.service.subscribe`);
- :class:`Service`: run Tiled, the broker and workers from one configuration;
- :class:`ResultEvents`: follow results the moment they are stored (:mod:`xafs_stream.transport.events`);
- :class:`TiledFeedback`, :class:`EventFeedback`: feedback sources for ``xafs_scan_until``;
- :func:`find_runs`, :func:`fetch_run`: query the catalog and read one run back.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "subscribe": "xafs_stream.service",
    "Service": "xafs_stream.service",
    "ResultEvents": "xafs_stream.transport.events",
    "TiledFeedback": "xafs_stream.client.feedback",
    "EventFeedback": "xafs_stream.client.feedback",
    "find_runs": "xafs_stream.client.catalog",
    "fetch_run": "xafs_stream.client.catalog",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xafs_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
