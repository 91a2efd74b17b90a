"""Run small-matrix numerics on one thread (BLAS and OpenMP): the map solvers and feature kernels, and the
tempered SMC sampler with its least-squares mode finder.

Their BLAS calls are small (3 x 3 covariances, CG vectors of a window, 16 x 16 Gauss-Newton systems), so on
the shared 2-core machine multithreading only adds synchronisation cost (one thread made a batch map solve
~10x faster, and a live Bayesian XANES fit 24.1 s -> 19.6 s). The same holds
for OpenMP, which scikit-learn's k-means (the Gaussian mixture's initialisation) uses (see
docs/measurements.md).
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
