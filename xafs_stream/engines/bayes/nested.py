"""Independent evidence for Gaussian-peak models: nested sampling with dynesty (optional dependency).

The reference the replica-exchange free energies are checked against (tests/test_bayes_dynesty.py) and
benchmarked against (benchmarks/bench_bayes.py). Same model and priors as :func:`.nagata_peak_model`, known
Gaussian noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .models import nagata_peak_model


@dataclass
class NestedEvidence:
    """dynesty's result: free energy F = -log Z (nat) with its standard error, time (s), likelihood calls."""

    F: float
    se: float
    time_s: float
    ncall: int


def nested_free_energy(x: np.ndarray, y: np.ndarray, noise: float, n_peaks: int, *, nlive: int = 1000,
                       seed: int = 0, dlogz: float = 0.01, priors: str = "scaled") -> NestedEvidence:
    """-log Z of ``n_peaks`` Gaussian peaks (Nagata priors) for data ``y`` on ``x`` with noise sd ``noise``.

    ``priors``: "scaled" (:func:`.nagata_priors`, scaled to the data) or "nagata" (as published).

    dynesty (rslice, multi-ellipsoid bounds); raises InputError when dynesty is not installed.
    """
    try:
        import dynesty
    except ImportError as exc:
        raise InputError("nested_free_energy needs dynesty (pip install dynesty)") from exc
    x, y = np.asarray(x, float), np.asarray(y, float)
    if priors == "nagata":
        from .models.peaks import PeakModel, published_nagata_priors

        model = PeakModel(x, n_peaks, **published_nagata_priors())
    elif priors == "scaled":
        model = nagata_peak_model(x, y, n_peaks)
    else:
        raise InputError(f"priors must be 'scaled' or 'nagata', got {priors!r}")
    b = 1 / noise**2
    const = 0.5 * x.size * math.log(b / (2 * math.pi))

    def loglike(theta: np.ndarray) -> float:
        t = theta.reshape(n_peaks, 3)
        r = y - (t[:, :1] * np.exp(-0.5 * t[:, 2:3] * (x[None, :] - t[:, 1:2]) ** 2)).sum(axis=0)
        return -0.5 * b * (r @ r) + const

    t0 = time.perf_counter()
    sampler = dynesty.NestedSampler(loglike, model.prior_transform, model.n_params, nlive=nlive,
                                    sample="rslice", bound="multi", rstate=np.random.default_rng(seed))
    sampler.run_nested(dlogz=dlogz, print_progress=False)
    res = sampler.results
    return NestedEvidence(F=-float(res.logz[-1]), se=float(res.logzerr[-1]), time_s=time.perf_counter() - t0,
                          ncall=int(np.sum(res.ncall)))
