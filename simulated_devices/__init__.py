"""Simulated XAFS beamline built with ophyd (installed as ``xafs_stream.simulated_devices``)."""
