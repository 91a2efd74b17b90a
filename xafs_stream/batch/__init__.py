"""Batch work on a Dask distributed cluster: a stack larger than memory mapped tile by tile, and the missing
results of many runs computed in parallel. The science is the live path's (``engines``, ``worker.processing``);
this package only decides where it runs. Needs the optional ``dask`` extra (``pip install
"xafs-stream[dask]"``)."""
