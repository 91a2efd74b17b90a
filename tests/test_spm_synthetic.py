"""SpM on synthetic χ(k) built from FEFF paths with known shells.

Noise model: Gaussian white noise added to χ(k) (not to k^w χ) with standard deviation ``level`` × max|χ(k)|
over the fitted k range, so "1 % noise" is 0.01 × max|χ|. White noise in χ is what counting statistics in μ
give; with the usual k² weighting it makes high k noisy.

Tolerances of the issue (N within 10 %, R within 0.01 Å, σ² within 0.0005 Å² at 1 % noise) are checked where
the information in the data allows them: for two shells of one pair 0.1 Å apart the Cramér-Rao bound alone
(true model, white noise, k 3-16) is σ_N ≈ 5 and σ_R ≈ 0.04 Å at 1 % noise, so those are tested at noise
levels where the bound is well inside the tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xafs_stream.data import FEFF_DIR
from xafs_stream.engines.spm import path_chi, spm_fit
from xafs_stream.io.feff import read_feff_dir

FEO_DIR = Path(__file__).parent / "fixtures" / "feffit" / "feo_rocksalt_feff6l"
# Fe-O + Fe-Fe 0.1 Å apart near 2.0 Å is a test of the estimator, not a structure the FeO path set models
# (its Fe-Fe neighbours are at 3.06 Å): candidates at any distance, as for a path set used as amplitudes only.
ANY_R = dict(structure_window=None, max_n_factor=None)
K = 0.05 * np.arange(0, 401)  # 0 ... 20 1/Å, the grid of the preprocessing engine


pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def cu_paths():
    return read_feff_dir(FEFF_DIR / "cu_fcc_a3.615_feff6l").paths


@pytest.fixture(scope="module")
def fe_paths():
    return read_feff_dir(FEFF_DIR / "fe_bcc_a2.8665_feff6l").paths


@pytest.fixture(scope="module")
def feo_paths():
    return read_feff_dir(FEO_DIR).paths


def synth(shells, level, seed, kmin=3.0, kmax=14.0, de0=0.0):
    """χ(k) on K of shells [(path, N, R, σ²)] plus white noise of level × max|χ| over kmin..kmax."""
    k = np.where(K > 0, K, 1e-3)
    chi = sum(path_chi(p, k, n=n, r=r, sigma2=s2, de0=de0) for p, n, r, s2 in shells)
    sel = (K >= kmin) & (K <= kmax)
    sigma = level * np.max(np.abs(chi[sel]))
    rng = np.random.default_rng(seed)
    return chi + rng.normal(0.0, sigma, chi.shape), sigma


def match(result, truth):
    """Pair each true shell (pair, N, R, σ²) with the fitted shell of the same pair nearest in R."""
    out = []
    for pair, n, r, s2 in truth:
        cands = [s for s in result.shells if s.pair == pair]
        assert cands, f"no {pair} shell found; shells: {[(s.pair, round(s.r, 3)) for s in result.shells]}"
        out.append((min(cands, key=lambda s: abs(s.r - r)), (n, r, s2)))
    return out


def assert_within_issue_tolerance(result, truth):
    assert len(result.shells) == len(truth), [(s.pair, round(s.n, 2), round(s.r, 3)) for s in result.shells]
    for fitted, (n, r, s2) in match(result, truth):
        assert abs(fitted.n - n) <= 0.10 * n, (fitted, n)
        assert abs(fitted.r - r) <= 0.01, (fitted, r)
        assert abs(fitted.sigma2 - s2) <= 0.0005, (fitted, s2)


FE_TRUTH = [("Fe-Fe", 8.0, 2.4825, 0.0050), ("Fe-Fe", 6.0, 2.8665, 0.0060)]
FE_SEEDS = range(1, 9)


@pytest.fixture(scope="module")
def fe_fits(fe_paths):
    """bcc Fe, 8 @ 2.4825 Å and 6 @ 2.8665 Å (overlapping in |χ(R)|), 2 eV E0 offset, 1 % noise, 8 seeds;
    fitted in k and in R space (computed once for the tests below)."""
    fits = {"k": [], "r": []}
    for seed in FE_SEEDS:
        chi, _ = synth(
            [(fe_paths[0], 8.0, 2.4825, 0.0050), (fe_paths[1], 6.0, 2.8665, 0.0060)], 0.01, seed, de0=2.0
        )
        for space in fits:
            fits[space].append(
                spm_fit(K, chi, fe_paths, kmin=3, kmax=14, kweight=2, space=space, rmin=1.6, rmax=3.2)
            )
    return fits


@pytest.mark.parametrize("space", ["k", "r"])
def test_fe_bcc_two_shells_at_1pct_noise(fe_fits, space):
    """Over 8 noise realisations the mean absolute error is within the issue's tolerance for every parameter
    and every estimate is within 3 of its standard errors. (Per realisation the second shell's σ² scatters
    by 0.00045 Å² (measured over 20 seeds, matching its stated error), about the tolerance itself, so a
    per-seed 0.0005 Å² check would only test the choice of seeds.)"""
    errors = []
    for res in fe_fits[space]:
        assert len(res.shells) == 2
        assert abs(res.fit.de0 - 2.0) < 3 * res.fit.de0_err
        row = []
        for fitted, (n, r, s2) in match(res, FE_TRUTH):
            assert abs(fitted.n - n) < 3 * fitted.n_err
            assert abs(fitted.r - r) < 3 * fitted.r_err
            assert abs(fitted.sigma2 - s2) < 3 * fitted.sigma2_err
            row += [abs(fitted.n - n) / n, abs(fitted.r - r), abs(fitted.sigma2 - s2)]
        errors.append(row)
    mae = np.mean(errors, axis=0)
    assert np.all(mae[[0, 3]] <= 0.10), mae
    assert np.all(mae[[1, 4]] <= 0.01), mae
    assert np.all(mae[[2, 5]] <= 0.0005), mae


def _z_scores(results, truth):
    z = []
    for res in results:
        for fitted, (n, r, s2) in match(res, truth):
            z += [
                (fitted.n - n) / fitted.n_err,
                (fitted.r - r) / fitted.r_err,
                (fitted.sigma2 - s2) / fitted.sigma2_err,
            ]
    return np.abs(np.asarray(z))


@pytest.mark.parametrize("space", ["k", "r"])
def test_error_bars_cover_truth_at_stated_rate(fe_fits, space):
    """Standard errors are 1σ: about 68 % of |error|/σ below 1 and about 95 % below 2 (pooled over N, R,
    σ² of two shells and 8 noise realisations: 48 values)."""
    z = _z_scores(fe_fits[space], FE_TRUTH)
    assert 0.50 <= np.mean(z < 1.0) <= 0.90, np.round(z, 2)
    assert np.mean(z < 2.0) >= 0.85, np.round(z, 2)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["k", "r"])
def test_error_bars_cover_truth_at_stated_rate_many(cu_paths, space):
    """Cu first and second shell, 40 realisations at 1 % noise."""
    truth = [(cu_paths[0], 12.0, 2.5562, 0.0086), (cu_paths[1], 6.0, 3.615, 0.0120)]
    results = []
    for seed in range(100, 140):
        chi, _ = synth(truth, 0.01, seed)
        results.append(spm_fit(K, chi, cu_paths, kmin=3, kmax=14, kweight=2, space=space, rmin=1.6, rmax=3.8))
    z = _z_scores(results, [(p.pair, n, r, s2) for p, n, r, s2 in truth])
    assert 0.58 <= np.mean(z < 1.0) <= 0.85
    assert np.mean(z < 2.0) >= 0.90


@pytest.mark.parametrize("level", [0.003, 0.01])
def test_cu_first_shell_several_noise_levels(cu_paths, level):
    truth = [(cu_paths[0], 12.0, 2.5562, 0.0086)]
    chi, sigma = synth(truth, level, seed=3)
    res = spm_fit(K, chi, cu_paths, kmin=3, kmax=14, kweight=2, space="r", rmin=1.6, rmax=3.0)
    assert_within_issue_tolerance(res, [("Cu-Cu", 12.0, 2.5562, 0.0086)])
    # the noise estimated from 15-25 Å of the transform matches the noise put in
    assert res.fit.noise == pytest.approx(sigma, rel=0.25)


@pytest.mark.parametrize("level", [0.0005, 0.001])
def test_two_pairs_0p1_angstrom_apart(feo_paths, level):
    """Fe-O at 2.00 Å and Fe-Fe at 2.10 Å: resolved into the right pairs by the sparse step and within the
    issue's tolerance at noise levels where the bound allows it (σ_σ²(Fe-O) ≈ 0.0008 Å² at 0.3 % noise,
    measured over 12 seeds; it scales with the noise)."""
    fe_o, fe_fe = feo_paths[0], feo_paths[1]
    assert (fe_o.pair, fe_fe.pair) == ("Fe-O", "Fe-Fe")
    chi, _ = synth([(fe_o, 4.0, 2.00, 0.005), (fe_fe, 4.0, 2.10, 0.005)], level, seed=5)
    res = spm_fit(K, chi, feo_paths, kmin=3, kmax=14, kweight=2, space="k", rmin=1.5, rmax=2.8, **ANY_R)
    assert_within_issue_tolerance(res, [("Fe-O", 4.0, 2.00, 0.005), ("Fe-Fe", 4.0, 2.10, 0.005)])


@pytest.mark.parametrize("level", [0.003, 0.01])
def test_two_pairs_0p1_angstrom_apart_error_bars_cover(feo_paths, level):
    """At 0.3 % and 1 % noise: two shells of the right pairs, and the truth inside 3 standard errors."""
    chi, _ = synth([(feo_paths[0], 4.0, 2.00, 0.005), (feo_paths[1], 4.0, 2.10, 0.005)], level, seed=6)
    res = spm_fit(K, chi, feo_paths, kmin=3, kmax=14, kweight=2, space="k", rmin=1.5, rmax=2.8, **ANY_R)
    assert len(res.shells) == 2
    for fitted, (n, r, s2) in match(res, [("Fe-O", 4.0, 2.00, 0.005), ("Fe-Fe", 4.0, 2.10, 0.005)]):
        assert abs(fitted.n - n) < 3 * fitted.n_err
        assert abs(fitted.r - r) < 3 * fitted.r_err
        assert abs(fitted.sigma2 - s2) < 3 * fitted.sigma2_err


FEO_TRUTH = [("Fe-O", 4.0, 2.00, 0.005), ("Fe-Fe", 4.0, 2.10, 0.005)]


def test_two_pairs_0p1_angstrom_apart_r_space_realisations(feo_paths):
    """The benchmark's FeO-like case (R-space fit, k 3-14, k², R 1.0-2.6 Å, 0.3 % noise) over 8 noise
    realisations. The N-σ² and R-ΔE0 correlations of the two overlapping shells leave a second minimum
    (Fe-O σ² ≈ 0.011-0.015 Å², ΔE0 ≈ -1.5 eV) whose k²-weighted residual is below the right one's in some
    realisations (seed 7 here: choosing by the k² residual alone, ``select_kweights=(2,)``, gives Fe-O σ²
    0.0109 Å² and Fe-Fe N 6.5 standard errors off); choosing between minima by the residual summed over k
    weights 0-2 must return the right one. Every parameter is within 3.5 of its standard errors of the
    truth (those errors are checked for coverage on bcc Fe above), Fe-O σ² within 0.003 Å² in every
    realisation and within 0.0015 Å² on average (σ_σ² ≈ 0.0008 Å² at this noise)."""
    fe_o, fe_fe = feo_paths[0], feo_paths[1]
    s2_errors = []
    for seed in range(8):
        chi, _ = synth([(fe_o, 4.0, 2.00, 0.005), (fe_fe, 4.0, 2.10, 0.005)], 0.003, seed)
        res = spm_fit(K, chi, feo_paths, kmin=3, kmax=14, kweight=2, space="r", rmin=1.0, rmax=2.6, **ANY_R)
        assert sorted(s.pair for s in res.shells) == ["Fe-Fe", "Fe-O"], seed
        for fitted, (n, r, s2) in match(res, FEO_TRUTH):
            assert abs(fitted.n - n) < 3.5 * fitted.n_err, (seed, fitted)
            assert abs(fitted.r - r) < 3.5 * fitted.r_err, (seed, fitted)
            assert abs(fitted.sigma2 - s2) < 3.5 * fitted.sigma2_err, (seed, fitted)
        fe_o_fit = match(res, FEO_TRUTH)[0][0]
        assert abs(fe_o_fit.sigma2 - 0.005) < 0.003, (seed, fe_o_fit)
        s2_errors.append(abs(fe_o_fit.sigma2 - 0.005))
    assert np.mean(s2_errors) < 0.0015, s2_errors


def test_kweight_score_terms_are_noise_power():
    """For a white-noise residual in χ each k weight's term of the selection score is the noise variance,
    so no weight dominates the sum by its units (mean over 200 draws, R-space map of the FeO benchmark)."""
    from xafs_stream.engines.spm.selection import kweight_score
    from xafs_stream.engines.spm.transform import make_fit_space

    fs = make_fit_space(0.05, space="r", kmin=3, kmax=14, kweight=2, dk=1, rmin=1.0, rmax=2.6, k_limit=20)
    rng = np.random.default_rng(17)
    eps = 0.002
    for w in (0.0, 1.0, 2.0, 3.0):
        mean = np.mean([kweight_score(fs, rng.normal(0, eps, fs.k.size), (w,)) for _ in range(200)])
        assert mean == pytest.approx(eps**2, rel=0.1), w


@pytest.mark.parametrize("level", [0.0003, 0.0005])
def test_same_pair_0p1_angstrom_apart_split(cu_paths, level):
    """Two Cu-Cu shells 0.1 Å apart (below π/2Δk): the sparse step merges them, the CV split test separates
    them at noise levels where the data hold the information (k 3-16)."""
    truth = [(cu_paths[0], 6.0, 2.50, 0.005), (cu_paths[0], 6.0, 2.60, 0.005)]
    chi, _ = synth(truth, level, seed=7, kmax=16)
    res = spm_fit(K, chi, cu_paths, kmin=3, kmax=16, kweight=2, space="k", rmin=1.8, rmax=3.2, split_test="on")
    assert any(t["accepted"] for t in res.diagnostics["split_tests"])
    assert_within_issue_tolerance(res, [("Cu-Cu", 6.0, 2.50, 0.005), ("Cu-Cu", 6.0, 2.60, 0.005)])


def test_single_shell_is_not_split(cu_paths):
    """A single Gaussian shell at low noise stays one shell (no false split)."""
    chi, _ = synth([(cu_paths[0], 12.0, 2.55, 0.0085)], 0.0005, seed=8, kmax=16)
    res = spm_fit(K, chi, cu_paths, kmin=3, kmax=16, kweight=2, space="k", rmin=1.8, rmax=3.2, split_test="on")
    assert len(res.shells) == 1
    assert res.shells[0].n == pytest.approx(12.0, rel=0.02)


def test_k_space_fit_warns_about_signal_beyond_rmax(cu_paths):
    """A k-space fit models all of χ(k): with a strong shell far beyond rmax the result says so."""
    chi, _ = synth([(cu_paths[0], 12.0, 2.5562, 0.0086), (cu_paths[4], 24.0, 4.4275, 0.0110)], 0.003, seed=11)
    res = spm_fit(K, chi, cu_paths, kmin=3, kmax=14, kweight=2, space="k", rmin=1.6, rmax=3.0)
    assert res.diagnostics["power_beyond_rmax"] > 0.1
    assert any("beyond rmax" in w for w in res.diagnostics["warnings"])
    ok = spm_fit(K, chi, cu_paths, kmin=3, kmax=14, kweight=2, space="k", rmin=1.6, rmax=4.8)
    assert ok.diagnostics["warnings"] == []
    assert ok.shells[0].n == pytest.approx(12.0, rel=0.1)


def test_bootstrap_errors_agree_with_covariance(fe_paths):
    chi, _ = synth([(fe_paths[0], 8.0, 2.4825, 0.0050), (fe_paths[1], 6.0, 2.8665, 0.0060)], 0.01, seed=21)
    res = spm_fit(
        K, chi, fe_paths, kmin=3, kmax=14, kweight=2, space="k", rmin=1.6, rmax=3.2, n_bootstrap=60, seed=4
    )
    for s in res.shells:
        for cov, boot in (
            (s.n_err, s.n_err_boot),
            (s.r_err, s.r_err_boot),
            (s.sigma2_err, s.sigma2_err_boot),
        ):
            assert 0.5 < boot / cov < 2.0


def test_sparse_distribution_peaks_at_true_shell(cu_paths):
    """The cross-validated sparse N(R, σ²) itself (before refinement) sits at the true R and σ²."""
    chi, _ = synth([(cu_paths[0], 12.0, 2.5562, 0.0086)], 0.003, seed=9)
    res = spm_fit(K, chi, cu_paths, kmin=3, kmax=14, kweight=2, space="k", rmin=1.6, rmax=3.2)
    d = res.distribution[0]
    assert d.shape == (len(res.r_grid), len(res.sigma2_grid))
    assert np.all(d >= 0)
    weight = d.sum()
    r_mean = float((d.sum(axis=1) @ res.r_grid) / weight)
    s2_mean = float((d.sum(axis=0) @ res.sigma2_grid) / weight)
    assert r_mean == pytest.approx(2.5562, abs=0.01)
    assert s2_mean == pytest.approx(0.0086, abs=0.0015)
    assert np.count_nonzero(d) < 0.01 * d.size  # sparse


def test_estimator_wrapper(cu_paths):
    from xafs_stream.engines.spm import SparseShellModel

    chi, _ = synth([(cu_paths[0], 12.0, 2.5562, 0.0086)], 0.003, seed=12)
    model = SparseShellModel(kmin=3, kmax=14, space="r", rmin=1.6, rmax=3.0).fit(K, chi, cu_paths)
    assert model.shells_[0].r == pytest.approx(2.5562, abs=0.01)
    assert model.alpha_ == model.result_.alpha > 0
    assert "Cu-Cu" in model.result_.shell_table()
