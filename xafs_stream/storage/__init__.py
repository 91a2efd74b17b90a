"""Storage: everything that talks to Tiled.

- :mod:`.tiled_server`: the embedded Tiled server (SQLite catalog and tables) or a connection to a remote one;
- :mod:`.raw_writer`: :class:`~.raw_writer.LiveTiledWriter`, raw runs into Tiled while they are measured;
- :mod:`.layout`: the results tree, how a result's arrays become nodes and how they are read back (the one
  module that knows paths, padding, packing and summary nesting);
- :mod:`.results`: :class:`~.results.ResultStore`, idempotent result writes in that layout.
"""
