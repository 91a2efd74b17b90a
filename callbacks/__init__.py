"""Document consumers that turn bluesky runs into work units (installed as ``xafs_stream.callbacks``)."""
