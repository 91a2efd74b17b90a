"""Faces for analysts and plans: results read back from Tiled.

- :mod:`.catalog`: find runs by metadata and result values (:func:`~.catalog.find_runs`), read one run back
  (:func:`~.catalog.fetch_run`);
- :mod:`.export`: XDI, HDF5 (NeXus-style) and CSV files of a run;
- :mod:`.report`: an HTML report with figures;
- :mod:`.feedback`: per-repeat results for adaptive plans (``xafs_scan_until``), from Tiled or result events.
"""
