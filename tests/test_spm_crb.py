"""The issue's tolerances at 1 % noise against the Cramér-Rao bound (CRB) of the data.

Noise as in test_spm_synthetic.py: white noise in χ(k) on the 0.05 1/Å grid, ε = 1 % of max|χ| over the k
range. The bound (benchmarks/spm_crb.py) is ε² (JᵀJ)⁻¹ with J = ∂χ/∂θ over the k range's grid points,
θ = (N, R, σ² per shell, one shared ΔE0), S0² = 1: no unbiased estimator using χ over that range does better,
whatever k weight or space it fits in. For white noise in χ the unweighted (k⁰) k-space least squares is the
maximum-likelihood estimator and reaches the bound; a k² weight costs a factor 2-3 in σ (spm_crb.py prints
``ls_fit``).

Issue tolerances: N within 10 %, R within 0.01 Å, σ² within 0.0005 Å². At 1 % noise, k 3-14 (1σ CRB):

- Cu-Cu 6 @ 2.50 + 6 @ 2.60 Å (σ² 0.005): σ_N 6.1, σ_R 0.05 Å, σ_σ² 0.0018-0.0020 Å² (k 3-16: 4.9, 0.04,
  0.0015): 5-10x the tolerances, not attainable. Tested: the bound itself (against the scatter of the
  maximum-likelihood refinement where it is linear), and the rate at which even the refinement told the true
  model meets the tolerances at 1 %.
- Fe-O 4 @ 2.00 + Fe-Fe 4 @ 2.10 Å (σ² 0.005): σ_N 0.13 / 0.11, σ_R 0.0087 / 0.0020 Å, σ_σ² 0.00092 /
  0.00031 Å². N of both shells and the Fe-Fe R are attainable (≥ 3σ inside), Fe-O R and Fe-Fe σ² in
  75 % / 89 % of realisations, Fe-O σ² not (the tolerance is 0.54σ). Tested with the engine at k⁰ in k space
  (efficient here): counts within tolerance at the rates the bound implies; standard errors within a factor
  2 of the bound (median within 25 %) and covering the truth.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom, norm

from xafs_stream.data import FEFF_DIR
from xafs_stream.engines.spm import ShellSeed, make_fit_space, refine_shells, spm_fit
from xafs_stream.io.feff import read_feff_dir

ROOT = Path(__file__).resolve().parent.parent
TOL = np.array([0.10, 0.01, 0.0005])  # N (relative), R (Å), σ² (Å²)
ALPHA = 0.005  # a count test fails by chance with probability below this (binomial, per count)

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _load_crb():
    spec = importlib.util.spec_from_file_location("spm_crb", ROOT / "benchmarks" / "spm_crb.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("spm_crb", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


crb = _load_crb()
K = crb.K

CU_TRUTH = [(6.0, 2.50, 0.005), (6.0, 2.60, 0.005)]
FEO_TRUTH = [(4.0, 2.00, 0.005), (4.0, 2.10, 0.005)]
FEO_PAIRS = ("Fe-O", "Fe-Fe")


@pytest.fixture(scope="module")
def cu_paths():
    return read_feff_dir(FEFF_DIR / "cu_fcc_a3.615_feff6l").paths


@pytest.fixture(scope="module")
def feo_paths():
    return read_feff_dir(crb.FEO_DIR).paths


def noisy(paths, truth, level, seed, kmax):
    """χ on K of the true shells plus white noise ε = level × max|χ| over 3..kmax; returns (χ, ε)."""
    k = np.where(K > 0, K, 1e-3)
    eps = crb.noise_sigma(paths, truth, level, kmin=3.0, kmax=kmax)
    return crb.model_chi(paths, truth, k) + np.random.default_rng(seed).normal(0.0, eps, K.shape), eps


def tolerances(truth):
    """Absolute tolerances per shell and parameter, shape (S, 3)."""
    return np.array([[TOL[0] * n, TOL[1], TOL[2]] for n, _, _ in truth])


def min_count(n, p):
    """Smallest count of n that a rate p reaches with probability ≥ 1 - ALPHA."""
    return int(binom.ppf(ALPHA, n, p))


def refine_true_model(paths, truth, chi, kmax):
    """The engine's refinement (k⁰, k space: maximum likelihood for white noise in χ) of the true shells,
    started at the truth. Returns (estimates, reported errors), each of shape (S, 3)."""
    fs = make_fit_space(0.05, space="k", kmin=3.0, kmax=kmax, kweight=0, k_limit=float(K[-1]))
    cols = np.round(fs.k / 0.05).astype(int)
    seeds = [
        ShellSeed(pair=p.pair, n=n, r=r, sigma2=s2, path=p, sparse_n=n)
        for p, (n, r, s2) in zip(paths, truth, strict=True)
    ]
    fit = refine_shells(fs, chi[cols], seeds, de0=0.0)
    est = np.array([[s.n, s.r, s.sigma2] for s in fit.shells])
    err = np.array([[s.n_err, s.r_err, s.sigma2_err] for s in fit.shells])
    return est, err


def as_array(bound):
    return np.column_stack([bound.n, bound.r, bound.sigma2])


# -- the bound itself ---------------------------------------------------------------------------------


def test_crb_equals_scatter_of_maximum_likelihood_fit(cu_paths):
    """Where the problem is linear (0.05 % noise) the k⁰ refinement of the true model is efficient: over 20
    realisations its scatter is the bound (ratio within 0.6-1.45: the standard deviation of 20 draws
    scatters by 16 %) and its reported errors are the bound within 10 %. The bound scales exactly with ε,
    so this checks the 1 % numbers too."""
    paths = [cu_paths[0], cu_paths[0]]
    eps = crb.noise_sigma(paths, CU_TRUTH, 0.0005, kmin=3.0, kmax=16.0)
    bound = as_array(crb.bounds(paths, CU_TRUTH, eps=eps, kmin=3.0, kmax=16.0)["crb_k"])
    est, err = [], []
    for seed in range(20):
        chi, _ = noisy(paths, CU_TRUTH, 0.0005, seed, kmax=16.0)
        e, s = refine_true_model(paths, CU_TRUTH, chi, kmax=16.0)
        est.append(e)
        err.append(s)
    scatter = np.std(np.asarray(est) - np.asarray(CU_TRUTH), axis=0, ddof=1)
    assert np.all((scatter / bound > 0.6) & (scatter / bound < 1.45)), scatter / bound
    assert np.allclose(np.median(err, axis=0), bound, rtol=0.1), np.median(err, axis=0) / bound


@pytest.mark.parametrize("kmax", [14.0, 16.0])
def test_same_pair_tolerances_beyond_the_bound_at_1pct(cu_paths, kmax):
    """Cu-Cu pair 0.1 Å apart at 1 % noise: every 1σ bound is at least 2.5 tolerances, and the chance that
    an efficient unbiased estimate meets all six tolerances (Gaussian with the bound's covariance) is below
    10 %. The earlier estimate (k 3-16: σ_N ≈ 5, σ_R ≈ 0.04 Å) is reproduced."""
    paths = [cu_paths[0], cu_paths[0]]
    eps = crb.noise_sigma(paths, CU_TRUTH, 0.01, kmin=3.0, kmax=kmax)
    b = crb.bounds(paths, CU_TRUTH, eps=eps, kmin=3.0, kmax=kmax)["crb_k"]
    assert np.all(as_array(b) > 2.5 * tolerances(CU_TRUTH)), as_array(b)
    if kmax == 16.0:
        assert b.n == pytest.approx([4.9, 4.9], abs=0.2)
        assert b.r == pytest.approx([0.04, 0.04], abs=0.002)
    assert crb.within_rate(b.cov, tolerances(CU_TRUTH)) < 0.10


def test_same_pair_at_1pct_true_model_meets_tolerances_at_most_at_the_bound_rate(cu_paths):
    """Even told the true two-shell model and started at the truth, the refinement at 1 % noise (k 3-16)
    meets all six tolerances in no more realisations than the bound's rate allows (p from the Gaussian with
    the bound's covariance, upper binomial quantile). The bound is for unbiased estimates; this refinement
    is bounded (N ≥ 0) and started at the truth, which only helps it."""
    paths = [cu_paths[0], cu_paths[0]]
    eps = crb.noise_sigma(paths, CU_TRUTH, 0.01, kmin=3.0, kmax=16.0)
    b = crb.bounds(paths, CU_TRUTH, eps=eps, kmin=3.0, kmax=16.0)["crb_k"]
    p = crb.within_rate(b.cov, tolerances(CU_TRUTH))
    n = 20
    hits = 0
    for seed in range(n):
        chi, _ = noisy(paths, CU_TRUTH, 0.01, 500 + seed, kmax=16.0)
        est, _ = refine_true_model(paths, CU_TRUTH, chi, kmax=16.0)
        hits += bool(np.all(np.abs(est - np.asarray(CU_TRUTH)) <= tolerances(CU_TRUTH)))
    assert hits <= binom.ppf(1 - ALPHA, n, p), (hits, p)


def test_same_pair_at_1pct_engine_does_not_claim_the_split(cu_paths):
    """With σ_N ≈ N at 1 % noise the data cannot show two shells: the engine reports one Cu-Cu shell at the
    N-weighted mean distance (2.55 Å) and rejects the split (k 3-16, k², k space; 3 realisations)."""
    for seed in range(3):
        chi, _ = noisy([cu_paths[0], cu_paths[0]], CU_TRUTH, 0.01, 600 + seed, kmax=16.0)
        res = spm_fit(K, chi, cu_paths, kmin=3, kmax=16, kweight=2, space="k", rmin=1.8, rmax=3.2,
                      split_test="on")
        assert [s.pair for s in res.shells] == ["Cu-Cu"], [(s.pair, s.r) for s in res.shells]
        assert not any(t["accepted"] for t in res.diagnostics["split_tests"])
        assert res.shells[0].r == pytest.approx(2.55, abs=0.01)


# -- Fe-O + Fe-Fe 0.1 Å apart at 1 % noise --------------------------------------------------------------

FEO_SEEDS = range(300, 312)


@pytest.fixture(scope="module")
def feo_bound(feo_paths):
    paths = [feo_paths[0], feo_paths[1]]
    assert tuple(p.pair for p in paths) == FEO_PAIRS
    eps = crb.noise_sigma(paths, FEO_TRUTH, 0.01, kmin=3.0, kmax=14.0)
    return crb.bounds(paths, FEO_TRUTH, eps=eps, kmin=3.0, kmax=14.0)["crb_k"]


def _feo_fits(feo_paths, **settings):
    """(estimates, reported errors), each (n_seeds, 2, 3) in FEO_PAIRS order; all fits must find 2 shells."""
    est, err = [], []
    for seed in FEO_SEEDS:
        chi, _ = noisy([feo_paths[0], feo_paths[1]], FEO_TRUTH, 0.01, seed, kmax=14.0)
        # Fe-Fe at 2.10 Å is not where the FeO path set puts it (3.06 Å): candidates at any distance
        res = spm_fit(K, chi, feo_paths, kmin=3, kmax=14, structure_window=None, max_n_factor=None, **settings)
        assert sorted(s.pair for s in res.shells) == sorted(FEO_PAIRS), (seed, res.shell_table())
        shells = {s.pair: s for s in res.shells}
        est.append([[shells[p].n, shells[p].r, shells[p].sigma2] for p in FEO_PAIRS])
        err.append([[shells[p].n_err, shells[p].r_err, shells[p].sigma2_err] for p in FEO_PAIRS])
    return np.asarray(est), np.asarray(err)


@pytest.fixture(scope="module")
def feo_fits_k0(feo_paths):
    """The whole engine at k⁰ in k space (R 1.5-2.8 Å), 12 realisations at 1 % noise."""
    return _feo_fits(feo_paths, kweight=0, space="k", rmin=1.5, rmax=2.8)


def test_feo_1pct_bound_splits_the_tolerances(feo_bound):
    """Which tolerances the bound allows at 1 % noise (k 3-14): N (both) and Fe-Fe R at ≥ 3σ; Fe-O R and
    Fe-Fe σ² at 1-2σ; Fe-O σ² below 1σ (not attainable per realisation)."""
    z = tolerances(FEO_TRUTH) / as_array(feo_bound)
    assert np.all(z[:, 0] > 3.0) and z[1, 1] > 3.0, z
    assert 1.0 < z[0, 1] < 2.0 and 1.0 < z[1, 2] < 2.0, z
    assert z[0, 2] < 1.0, z


def test_feo_1pct_tolerances_at_the_rate_of_the_bound(feo_fits_k0, feo_bound):
    """Per parameter, the count of realisations within the issue's tolerance is at least the lower
    binomial quantile (α = 0.005) of the rate an efficient estimator has, P(|z| < tol/σ_CRB): 11-12 of
    12 for N and the Fe-Fe R, fewer for the Fe-O R and Fe-Fe σ² (5 and 7 of 12). The Fe-O σ² (tolerance 0.54σ) is left to the
    coverage test below."""
    est, _ = feo_fits_k0
    within = np.abs(est - np.asarray(FEO_TRUTH)) <= tolerances(FEO_TRUTH)  # (n, 2, 3)
    rate = 2 * norm.cdf(tolerances(FEO_TRUTH) / as_array(feo_bound)) - 1
    n = len(est)
    checked = [(0, 0), (1, 0), (1, 1), (0, 1), (1, 2)]  # (shell, parameter): N, N, R Fe-Fe, R Fe-O, σ² Fe-Fe
    for i, j in checked:
        need = min_count(n, rate[i, j])
        assert within[:, i, j].sum() >= need, (FEO_PAIRS[i], ("N", "R", "σ²")[j], within[:, i, j].sum(), need)
    assert min_count(n, rate[0, 0]) >= 11 and min_count(n, rate[1, 1]) >= 11


def test_feo_1pct_errors_efficient_and_covering(feo_fits_k0, feo_bound):
    """Where the tolerance is out of reach (Fe-O σ²) the engine says so: its reported σ² error is above the
    tolerance. Every reported standard error is within a factor 2 of the bound and their median within
    25 % (efficient; each is the covariance at the estimate, so it moves with the estimated σ²), and the
    errors cover the truth (72 values: about 68 % within 1σ, ≥ 88 % within 2σ, none beyond 4σ)."""
    est, err = feo_fits_k0
    ratio = err / as_array(feo_bound)[None]
    assert np.all((ratio > 0.5) & (ratio < 2.0)), np.round(ratio, 2)
    median = np.median(ratio, axis=0)
    assert np.all((median > 0.8) & (median < 1.25)), np.round(median, 2)
    assert np.all(err[:, 0, 2] > TOL[2]), err[:, 0, 2]
    z = np.abs(est - np.asarray(FEO_TRUTH)) / err
    assert 0.5 <= np.mean(z < 1) <= 0.85, np.round(z, 2)
    assert np.mean(z < 2) >= 0.88, np.round(z, 2)
    assert z.max() < 4.0, np.round(z, 2)


def test_feo_1pct_default_kweight2_errors_cover(feo_paths, feo_bound):
    """The benchmark's configuration (R space 1.0-2.6 Å, k²) at 1 % noise: the reported errors cover the
    truth at the stated rate (72 values: 55-85 % within 1σ, ≥ 85 % within 2σ, none beyond 4σ). Its errors
    are 2-3x the bound anyway (the k² weight is not the likelihood weight for white noise in χ).

    Before the errors took the refinement's other minima into account (engines/spm/minima.py) this failed:
    the pair leaves two minima 5-8 local standard errors apart (ΔE0 ≈ +1…+4 eV with a small Fe-O σ², and
    ΔE0 ≈ -2 eV with Fe-O σ² ≈ 0.012-0.02 Å²) whose residuals differ by about the noise; the one returned
    alternated between realisations (seeds 301, 305, 310 here: |z| up to 5.6 against the local covariance).
    """
    est, err = _feo_fits(feo_paths, kweight=2, space="r", rmin=1.0, rmax=2.6)
    z = np.abs(est - np.asarray(FEO_TRUTH)) / err
    assert 0.55 <= np.mean(z < 1) <= 0.85, np.round(z, 2)
    assert np.mean(z < 2) >= 0.85 and z.max() < 4.0, np.round(z, 2)
