"""xafs-stream: streaming XAFS and μ-XAFS analysis for bluesky beamlines, with results in Tiled.

Flow: simulated or real devices → bluesky documents → work units (``xafs_stream.callbacks``) →
ZeroMQ broker and workers → pure analysis engines (``xafs_stream.engines``) → results in Tiled.
"""

__version__ = "0.1.0"
