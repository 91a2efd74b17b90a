"""Run the map solvers and feature kernels on one thread (BLAS and OpenMP).

Their BLAS calls are small (3 x 3 covariances, CG vectors of a window): on the 2-core machine, shared with other
jobs, a 128 x 128 batch map solve took 3.9 s with two OpenBLAS threads and 0.39 s with one (measured
2026-11-25), so multithreading only adds synchronisation cost here. The same holds for OpenMP, which
scikit-learn's k-means (the Gaussian mixture's initialisation) uses: fitting the phase model of a 512 x 512 map
took 31-78 ms with two OpenMP threads and 11-12 ms with one (measured 2026-11-25).
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
    """One thread for every BLAS and OpenMP library loaded (the name is kept from when only BLAS was limited)."""
    with _controller().limit(limits=1):
        yield
