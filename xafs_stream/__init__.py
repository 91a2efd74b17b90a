"""xafs-stream: streaming XAFS and μ-XAFS analysis for bluesky beamlines, with results in Tiled.

Flow: simulated or real devices → bluesky documents → work units (``xafs_stream.callbacks``) →
ZeroMQ broker and workers → pure analysis engines (``xafs_stream.engines``) → results in Tiled.
"""

__version__ = "0.1.0"


def subscribe(RE, config=None, **kwargs):
    """Attach xafs-stream's live callbacks to a RunEngine (see :func:`xafs_stream.service.subscribe`)."""
    from .service import subscribe as _subscribe

    return _subscribe(RE, config, **kwargs)
