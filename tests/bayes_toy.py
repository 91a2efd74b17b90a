"""A weak Gaussian peak of unknown centre and width on a constant, with its exact evidence and posterior
moments by quadrature: the ground truth the sampler tests (collapsed moves, tempered SMC) compare with."""

import functools

import numpy as np
from scipy import stats

from xafs_stream.engines.bayes import LogUniform, Normal, Uniform
from xafs_stream.engines.bayes.models.base import SpectrumModel

V_RANGE = (0.002, 0.2)  # prior range of the peak's Gaussian variance, x units²


class PeakOnConstant(SpectrumModel):
    """y = w0 exp(-(x - mu)² / (2 v)) + w1: scales w0, w1; non-scale parameters mu and v (positive)."""

    kind = "peak+constant"

    def __init__(self, x, priors):
        self._setup(x, ["w0", "w1", "mu", "v"], list(priors), [0, 1, 0, 0], [0, 1])

    def shape(self, theta, c):
        if c == 0:
            return np.exp(-((self.x[None, :] - theta[:, 2:3]) ** 2) / (2 * theta[:, 3:4]))
        return np.ones((theta.shape[0], self.x.size))


def _problem(seed=7, noise=0.3):
    x = np.linspace(-1, 1, 50)
    priors = [Normal(0.5, 1.0), Normal(0.0, 0.3), Uniform(-0.8, 0.8), LogUniform(*V_RANGE)]
    truth = 0.4 * np.exp(-((x - 0.2) ** 2) / (2 * 0.03)) + 0.1
    y = truth + noise * np.random.default_rng(seed).standard_normal(x.size)
    return PeakOnConstant(x, priors), x, y, priors, noise


def _exact(x, y, priors, noise):
    """-log Z and the posterior mean and sd of mu and log v, by quadrature over (mu, log v) of the closed-form
    linear-Gaussian evidence of the two scales."""
    m0 = np.array([priors[0].mean, priors[1].mean])
    s0 = np.diag([priors[0].sd ** 2, priors[1].sd ** 2])
    mus = np.linspace(-0.8, 0.8, 161)
    logv = np.linspace(np.log(V_RANGE[0]), np.log(V_RANGE[1]), 81)
    log_l = np.empty((mus.size, logv.size))
    for i, mu in enumerate(mus):
        for j, lv in enumerate(logv):
            basis = np.stack([np.exp(-((x - mu) ** 2) / (2 * np.exp(lv))), np.ones_like(x)])
            cov = noise**2 * np.eye(x.size) + basis.T @ s0 @ basis
            log_l[i, j] = stats.multivariate_normal(basis.T @ m0, cov).logpdf(y)
    top = log_l.max()
    # priors: uniform in mu on [-0.8, 0.8]; log-uniform in v = uniform in log v
    w = np.exp(log_l - top) / 1.6 / (logv[-1] - logv[0])
    z = np.trapezoid(np.trapezoid(w, logv, axis=1), mus)
    post = w / z
    moments = {}
    marginals = {"mu": (mus, np.trapezoid(post, logv, axis=1)), "logv": (logv, np.trapezoid(post, mus, axis=0))}
    for name, (grid, marg) in marginals.items():
        mean = np.trapezoid(marg * grid, grid)
        moments[name] = (mean, np.sqrt(np.trapezoid(marg * (grid - mean) ** 2, grid)))
    return -(np.log(z) + top), moments


@functools.cache
def _truth():
    """The exact answers for the default problem (the quadrature takes a few seconds: computed once)."""
    _, x, y, priors, noise = _problem()
    return _exact(x, y, priors, noise)
