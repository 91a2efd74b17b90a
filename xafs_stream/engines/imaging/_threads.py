"""Run the map solvers with one BLAS thread.

Their BLAS calls are small (3 x 3 covariances, CG vectors of a window): on the 2-core machine, shared with other
jobs, a 128 x 128 batch map solve took 3.9 s with two OpenBLAS threads and 0.39 s with one (measured
2026-11-25), so multithreading only adds synchronisation cost here.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # inspecting the loaded libraries costs ~2 ms; the controller is reused (it holds no settings)
    return ThreadpoolController()


@contextmanager
def single_blas_thread():
    with _controller().limit(limits=1, user_api="blas"):
        yield
