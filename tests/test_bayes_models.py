"""Priors, line shapes and forward models of the Bayesian engine, checked against independent references
(scipy.stats distributions, numerical integration, closed-form eigenvalues of the 2x2 cluster model, and
the published La2O3 / CeO2 3d core-level structure)."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from xafs_stream.engines.bayes import (
    PUBLISHED,
    ClusterModel,
    Gamma,
    LogUniform,
    Normal,
    PeakModel,
    Uniform,
    XanesModel,
    cluster_lines,
    cluster_spectrum,
    xanes_priors,
)
from xafs_stream.engines.bayes.models import lineshapes as ls
from xafs_stream.engines.errors import InputError

PRIORS_VS_SCIPY = [
    (Normal(1.5, math.sqrt(0.2)), stats.norm(1.5, math.sqrt(0.2))),
    (Gamma(5.0, 0.04), stats.gamma(5.0, scale=1 / 0.04)),
    (Uniform(-2.0, 3.0), stats.uniform(-2.0, 5.0)),
    (LogUniform(0.01, 10.0), stats.loguniform(0.01, 10.0)),
]


@pytest.mark.parametrize("prior,ref", PRIORS_VS_SCIPY, ids=lambda p: type(p).__name__)
def test_prior_logpdf_ppf_and_sampling_match_scipy(prior, ref):
    u = np.linspace(0.01, 0.99, 25)
    x = ref.ppf(u)
    np.testing.assert_allclose(prior.logpdf(x), ref.logpdf(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(prior.ppf(u), x, rtol=1e-9)
    np.testing.assert_allclose(prior.cdf(x), u, rtol=1e-9)
    draws = prior.sample(np.random.default_rng(0), 20000)
    assert stats.kstest(draws, ref.cdf).pvalue > 1e-3


@pytest.mark.parametrize(
    "make",
    [
        lambda: Uniform(1.0, 1.0),
        lambda: Normal(0.0, 0.0),
        lambda: Gamma(0.0, 1.0),
        lambda: Gamma(2.0, -1.0),
        lambda: LogUniform(0.0, 1.0),
        lambda: LogUniform(2.0, 1.0),
        lambda: Normal(float("nan"), 1.0),
    ],
)
def test_prior_without_support_is_rejected(make):
    with pytest.raises(InputError, match="prior"):
        make()


def test_centre_prior_with_no_support_over_the_data_is_rejected():
    x = np.linspace(0, 3, 50)
    with pytest.raises(InputError, match="no support over the data range"):
        PeakModel(x, 2, amplitude=Gamma(5, 5), center=Normal(1000.0, 0.1), width=Gamma(5, 0.04))
    with pytest.raises(InputError, match="K"):
        PeakModel(x, 0, amplitude=Gamma(5, 5), center=Normal(1.5, 0.4), width=Gamma(5, 0.04))


@pytest.mark.parametrize("shape", ["gaussian", "lorentzian", "pseudo_voigt"])
def test_peak_shapes_have_the_stated_fwhm_and_area(shape):
    mu, b, eta, a = np.array([0.3]), np.array([40.0]), np.array([0.35]), np.array([2.0])
    w = float(ls.fwhm_from_b(b)[0])

    def f(x):
        x = np.atleast_1d(np.asarray(x, float))
        if shape == "gaussian":
            return a[0] * ls.gaussian(x, mu, b)[0]
        if shape == "lorentzian":
            return a[0] * ls.lorentzian(x, mu, b)[0]
        return a[0] * ls.pseudo_voigt(x, mu, b, eta)[0]

    np.testing.assert_allclose(f([0.3 - w / 2, 0.3 + w / 2]), [a[0] / 2, a[0] / 2], rtol=1e-12)
    area, _ = integrate.quad(lambda t: f(t)[0], -np.inf, np.inf, limit=400)
    np.testing.assert_allclose(ls.peak_area(shape, a, b, eta)[0], area, rtol=1e-6)


def test_edge_steps_are_the_broadened_unit_steps():
    x = np.linspace(-10, 10, 41)
    np.testing.assert_allclose(
        ls.erf_step(x, np.array([1.0]), np.array([2.0]))[0], stats.norm(1.0, 2.0).cdf(x), atol=1e-12
    )
    np.testing.assert_allclose(
        ls.arctan_step(x, np.array([1.0]), np.array([2.0]))[0], stats.cauchy(1.0, 2.0).cdf(x), atol=1e-12
    )


def test_peak_model_predicts_the_sum_and_relabels_peaks_by_centre():
    x = np.linspace(0, 3, 101)
    m = PeakModel(
        x, 2, amplitude=Gamma(5, 5), center=Normal(1.5, 0.45), width=Gamma(5, 0.04), baseline=Normal(0, 0.1)
    )
    theta = np.array([[1.0, 2.0, 100.0, 0.5, 1.0, 50.0, 0.05]])  # centres out of order
    expect = 1.0 * np.exp(-100 * (x - 2.0) ** 2 / 2) + 0.5 * np.exp(-50 * (x - 1.0) ** 2 / 2) + 0.05
    np.testing.assert_allclose(m.predict(theta)[0], expect, rtol=1e-12)
    canon = m.canonical(theta)
    assert canon[0, 1] < canon[0, 4]
    np.testing.assert_allclose(m.predict(canon), m.predict(theta), rtol=1e-12)
    np.testing.assert_allclose(m.log_prior(canon), m.log_prior(theta), rtol=1e-12)
    u = np.random.default_rng(1).random((200, m.n_params))
    t = m.prior_transform(u)
    assert np.all(t[:, 1] <= t[:, 4])


def test_xanes_model_is_edge_plus_constant_plus_peaks():
    x = np.linspace(7100, 7150, 120)
    pri = xanes_priors(x, 7120.0)
    m = XanesModel(x, 1, {**pri}, edge="erf", slope=True)
    theta = np.array([[1.1, 7121.0, 1.5, 0.02, 0.001, 0.3, 7125.0, 0.2]])
    expect = (
        1.1 * stats.norm(7121.0, 1.5).cdf(x)
        + 0.02
        + 0.001 * (x - 7125.0)
        + 0.3 * np.exp(-0.2 * (x - 7125.0) ** 2 / 2)
    )
    np.testing.assert_allclose(m.predict(theta)[0], expect, rtol=1e-12)


def test_two_configuration_limit_matches_closed_form():
    """f2 removed: eigenvalues Δ/2 ∓ sqrt(Δ²/4 + Nf V²) and weights from the two mixing angles."""
    delta, v, ufc = 3.0, 0.8, 5.0
    pos, w, ground = cluster_lines(delta, v, 0.0, ufc, n_config=2)
    t = math.sqrt(14) * v
    e_g = delta / 2 - math.sqrt(delta**2 / 4 + t**2)
    df = delta - ufc
    e_f = np.array([df / 2 - math.sqrt(df**2 / 4 + t**2), df / 2 + math.sqrt(df**2 / 4 + t**2)])
    np.testing.assert_allclose(pos[0], e_f - e_g, atol=1e-12)
    theta_i = 0.5 * math.atan2(2 * t, delta)  # ground = (cos, -sin) in (f0, f1)
    theta_f = 0.5 * math.atan2(2 * t, df)
    w_low = math.cos(theta_i - theta_f) ** 2
    np.testing.assert_allclose(w[0], [w_low, 1 - w_low], atol=1e-12)
    np.testing.assert_allclose(ground[0], [math.cos(theta_i) ** 2, math.sin(theta_i) ** 2], atol=1e-12)


def test_no_hybridisation_gives_the_bare_f0_line():
    pos, w, ground = cluster_lines(5.0, 0.0, 10.5, 12.5, n_config=3)
    np.testing.assert_allclose(ground[0], [1, 0, 0], atol=1e-14)
    j = int(np.argmax(w[0]))
    assert w[0, j] == pytest.approx(1.0)
    assert pos[0, j] == pytest.approx(0.0, abs=1e-12)  # final f0 minus initial f0


def test_la2o3_parameters_give_the_main_line_and_ct_satellite():
    """La 3d XPS of La2O3: a 3d9 4f0 line and a 3d9 4f1 L satellite ~4 eV apart, of comparable weight,
    from an almost pure f0 ground state (Kotani and Toyozawa; Mototake et al. 2019)."""
    p = PUBLISHED["La2O3"]
    pos, w, ground = cluster_lines(p["delta"], p["v"], p["uff"], p["ufc"])
    strong = w[0] > 0.05
    assert strong.sum() == 2
    assert abs(np.diff(pos[0][strong])[0] - 4.2) < 0.5
    assert 0.5 < w[0][strong].min() / w[0][strong].max() <= 1.0
    assert ground[0, 0] > 0.95


def test_ceo2_parameters_give_three_lines_and_mixed_valence():
    """Ce 3d XPS of CeO2: three final-state lines (4f2L2, 4f1L, 4f0) spanning ~16 eV with the 4f0 line
    (highest binding energy) near 30 % of the weight, and a ground state with n_f ~ 0.5 (Kotani et al.)."""
    p = PUBLISHED["CeO2"]
    pos, w, ground = cluster_lines(p["delta"], p["v"], p["uff"], p["ufc"])
    assert np.all(w[0] > 0.15)
    assert abs((pos[0].max() - pos[0].min()) - 15.8) < 1.5
    assert 0.2 < w[0][np.argmax(pos[0])] < 0.4
    n_f = ground[0, 1] + 2 * ground[0, 2]
    assert 0.4 < n_f < 0.6


def test_cluster_spectrum_has_unit_area_and_model_wraps_it():
    e = np.linspace(-40, 30, 4001)
    p = PUBLISHED["CeO2"]
    spec = cluster_spectrum(e, p["delta"], p["v"], p["uff"], p["ufc"], p["gamma"])[0]
    assert integrate.trapezoid(spec, e) == pytest.approx(1.0, abs=0.02)  # Lorentzian tails outside
    m = ClusterModel(
        e,
        {"delta": Uniform(0, 5), "scale": Gamma(2, 1)},
        fixed={k: p[k] for k in ("v", "uff", "ufc", "gamma")} | {"shift": 0.0},
    )
    np.testing.assert_allclose(m.predict(np.array([[p["delta"], 2.0]]))[0], 2 * spec, rtol=1e-12)
    with pytest.raises(InputError, match="needs a prior or a fixed value"):
        ClusterModel(e, {"delta": Uniform(0, 5)})
