"""Model selection by minimum free energy on synthetic spectra with known truth: number of peaks, noise
variance (Tokuda et al. 2017), signed XMCD peaks, and cluster-model Hamiltonians / parameter regions."""

import numpy as np
import pytest

from xafs_stream.engines.bayes import (
    PUBLISHED,
    ClusterModel,
    LogUniform,
    Normal,
    RemcSettings,
    Uniform,
    cluster_spectrum,
    decompose_peaks,
    decompose_xmcd,
    report,
    select_models,
)
from xafs_stream.engines.errors import InputError

# Our own 3-peak set: three overlapping Gaussians on 301 points (x in arbitrary units 0..30), with the
# overlap geometry of Nagata et al. (2012): neighbours 2.5 sigma apart, heights 0.6 / 1.5 / 1.2.
X = np.linspace(0.0, 30.0, 301)
TRUE = np.array([[0.6, 12.1, 1 / 1.00**2], [1.5, 14.6, 1 / 0.83**2], [1.2, 17.0, 1 / 0.78**2]])
SIGNAL = sum(a * np.exp(-b * (X - m) ** 2 / 2) for a, m, b in TRUE)
FAST = RemcSettings(n_replicas=12, n_chains=4, n_burn=300, n_sweeps=600)
# With these priors a fourth peak can split a true one almost for free, so F(4) - F(3) is small: over 16
# noise realisations (sd 0.1 and 0.2; long runs, 16 replicas x 4 chains x 4000 sweeps, F error 0.05-0.08)
# it ranged from 0.04 to 1.4 nat, always positive. The tests use realisations whose gap is >= 0.8 nat
# (noise 0.1: seeds 2, 3; noise 0.2: seed 3), so that the short runs here (F error 0.15-0.3) can resolve it.


def _data(noise, seed):
    return SIGNAL + noise * np.random.default_rng(seed).standard_normal(X.size)


@pytest.fixture(scope="module")
def moderate():
    noise = 0.1
    y = _data(noise, 2)
    st = RemcSettings(n_replicas=12, n_chains=4, n_burn=250, n_sweeps=500)
    return noise, decompose_peaks(X, y, k_range=range(1, 6), noise=noise, settings=st, seed=1)


def test_true_number_of_peaks_has_the_lowest_free_energy(moderate):
    _, sel = moderate
    F = np.array([f.F for f in sel.fits])
    se = np.array([f.F_se for f in sel.fits])
    assert sel.best_fit.name == "K=3"
    assert F[1] - F[2] > 20  # two peaks are far worse
    assert np.all(se < 0.3)


def test_true_parameters_lie_in_their_95_percent_intervals(moderate):
    _, sel = moderate
    rep = report(sel)
    truth = TRUE.ravel()  # a1, mu1, b1, a2, ...
    inside = [p.lo95 <= t <= p.hi95 for p, t in zip(rep.parameters, truth)]
    assert sum(inside) >= 8  # 9 parameters at 95 % coverage: one miss is within expectation
    assert all(inside[1::3])  # every centre
    for pk, (a, m, b) in zip(rep.peaks, TRUE):
        assert abs(pk.center.median - m) < 3 * pk.center.err
    assert rep.rhat_max < 1.1


def test_true_k_also_wins_at_higher_noise():
    noise, seed = 0.2, 3
    sel = decompose_peaks(X, _data(noise, seed), k_range=range(2, 5), noise=noise, settings=FAST, seed=seed)
    assert sel.best_fit.name == "K=3"


def test_estimated_noise_matches_the_true_noise_and_k():
    """Tokuda et al. (2017): minimise F over K and the noise variance together."""
    noise = 0.1
    sel = decompose_peaks(X, _data(noise, 3), k_range=range(2, 5), noise="auto", settings=FAST, seed=3)
    assert sel.noise_mode == "auto"
    assert sel.best_fit.name == "K=3"
    assert abs(sel.noise / noise - 1) < 0.1
    for fit in sel.fits:
        assert not fit.noise_scan.at_edge


@pytest.mark.slow
def test_high_noise_does_not_invent_peaks():
    sel = decompose_peaks(X, _data(0.6, 41), k_range=range(1, 5), noise=0.6, settings=FAST, seed=4)
    assert int(sel.best_fit.name.split("=")[1]) <= 3


def test_xmcd_signed_peaks_recover_signs_and_positions():
    x = np.linspace(700, 730, 151)
    truth = [(-1.0, 707.5, 1.2), (0.45, 720.2, 1.6)]  # negative L3, positive L2 dichroism (Fe-like)
    y = sum(a * np.exp(-0.5 * ((x - m) / s) ** 2) for a, m, s in truth)
    y = y + 0.03 * np.random.default_rng(5).standard_normal(x.size)
    sel = decompose_xmcd(x, y, k_range=range(1, 4), noise=0.03, edges=(708.0, 721.0), settings=FAST, seed=5)
    assert sel.best_fit.name == "K=2"
    rep = report(sel)
    for pk, (a, m, s) in zip(rep.peaks, truth):
        assert np.sign(pk.height.median) == np.sign(a)
        assert abs(pk.height.median - a) < 3 * pk.height.err  # within ~3 sigma
        assert abs(pk.center.median - m) < 3 * pk.center.err
    derived = {d.name: d for d in rep.derived}
    area_l3 = -1.0 * 1.2 * np.sqrt(2 * np.pi)
    assert abs(derived["area_l3"].median - area_l3) < 3 * derived["area_l3"].err


def _cluster_data(delta, noise_frac=0.05, seed=0):
    x = np.linspace(-20, 12, 81)
    p = dict(PUBLISHED["CeO2"], delta=delta)
    f = 10 * cluster_spectrum(x, p["delta"], p["v"], p["uff"], p["ufc"], p["gamma"])[0]
    noise = noise_frac * f.max()
    return x, f + noise * np.random.default_rng(seed).standard_normal(x.size), noise


CLUSTER_PRIORS = {
    "v": Uniform(0.2, 1.5),
    "ufc": Uniform(8, 16),
    "gamma": LogUniform(0.2, 2.0),
    "scale": LogUniform(1, 100),
    "shift": Normal(0, 1.0),
}


@pytest.mark.parametrize("delta,expected", [(1.6, "delta<6"), (12.5, "delta>6")])
def test_scanning_delta_changes_the_preferred_parameter_region(delta, expected):
    x, y, noise = _cluster_data(delta)
    cands = [
        (name, ClusterModel(x, {**CLUSTER_PRIORS, "delta": Uniform(lo, hi)}, fixed={"uff": 10.5}))
        for name, lo, hi in (("delta<6", -2.0, 6.0), ("delta>6", 6.0, 18.0))
    ]
    sel = select_models(
        cands, y, noise=noise, settings=RemcSettings(n_replicas=12, n_burn=200, n_sweeps=400), seed=7
    )
    assert sel.best_fit.name == expected
    assert sel.table()[1 - sel.best]["dF"] > 5
    s = sel.best_fit.samples()
    d = np.quantile(s[:, 0], [0.025, 0.975])
    assert d[0] <= delta <= d[1]


def test_three_configurations_are_needed_for_ceo2():
    x, y, noise = _cluster_data(PUBLISHED["CeO2"]["delta"], seed=1)
    cands = [
        ("f0-f1", ClusterModel(x, {**CLUSTER_PRIORS, "delta": Uniform(-2, 18)}, n_config=2)),
        ("f0-f1-f2", ClusterModel(x, {**CLUSTER_PRIORS, "delta": Uniform(-2, 18)}, fixed={"uff": 10.5})),
    ]
    sel = select_models(cands, y, noise=noise, settings=FAST, seed=8)
    assert sel.best_fit.name == "f0-f1-f2"
    assert sel.table()[0]["dF"] > 50


def test_selection_input_errors():
    y = _data(0.1, 0)
    with pytest.raises(InputError, match="K must be >= 1"):
        decompose_peaks(X, y, k_range=range(3), noise=0.1)
    with pytest.raises(InputError, match="noise"):
        decompose_peaks(X, y, k_range=range(1, 2), noise=-1.0)
    bad = y.copy()
    bad[10] = np.nan
    with pytest.raises(InputError, match="NaN"):
        decompose_peaks(X, bad, k_range=range(1, 2), noise=0.1)
    with pytest.raises(InputError, match="no candidate"):
        select_models([], y)
