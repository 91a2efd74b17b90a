"""Connect to a Dask distributed scheduler, or start a LocalCluster of worker processes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..engines.errors import InputError

LOCAL = "local"


def dask_missing() -> str | None:
    """None when ``dask.distributed`` can be imported, else the one line saying how to install it."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return 'Dask is not installed: pip install "xafs-stream[dask]" (dask[distributed])'
    return None


@contextmanager
def dask_client(scheduler: str = LOCAL, *, n_workers: int = 2, memory_limit: str | None = None,
                threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` (``tcp://host:port``), or to a LocalCluster of ``n_workers``
    processes (``scheduler="local"``) with ``memory_limit`` per worker (e.g. "2GB"; Dask spills to disk and
    pauses a worker above it). Closed (and the LocalCluster stopped) on exit.

    One thread per worker by default: the feature kernels are numpy loops over pixels, and on a small machine
    processes, not threads, use its cores (BLAS is held to one thread inside each task).
    """
    why = dask_missing()
    if why:
        raise InputError(why)
    from distributed import Client, LocalCluster

    # Dask's own INFO lines (nannies starting, workers registering) are not the user's business: the local
    # scheduler logs in this process, the workers are told by silence_logs
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler == LOCAL:
        if n_workers < 1:
            raise InputError(f"--workers must be >= 1, got {n_workers}")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                               memory_limit=memory_limit or "auto", dashboard_address=":0",
                               silence_logs=logging.WARNING)  # ":0": its web server on a free port, never 8787
        client = Client(cluster)
    else:
        if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
            raise InputError(f"--scheduler must be 'local' or a scheduler address like tcp://host:8786, "
                             f"got {scheduler!r}")
        cluster = None
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InputError(f"no Dask scheduler answers at {scheduler} ({exc})") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
