"""XANES: pre-edge centroids of real Fe K-edge references (Wilke et al., Am. Mineral. 86, 714 (2001):
Fe2+ and Fe3+ centroids 1.4 ± 0.1 eV apart on average) and the ``bayes.xanes`` worker analysis."""

import functools
import math

import numpy as np
import pytest

from xafs_stream.analyses.registry import AnalysisResult, SkipAnalysis, default_registry
from xafs_stream.core import WorkUnit
from xafs_stream.data import XANES_REFS_DIR
from xafs_stream.engines.bayes import RemcSettings, fit_preedge, fit_xanes
from xafs_stream.engines.errors import InputError
from xafs_stream.io import read_spectrum

SETTINGS = RemcSettings(n_replicas=14, n_chains=4, n_burn=250, n_sweeps=500)


def _ref(name):
    if name.endswith(".e"):
        s = read_spectrum(XANES_REFS_DIR / name)
        return s.energy, s.mu
    s = read_spectrum(XANES_REFS_DIR / "FeLibNov2021.nor", mu_column=name)
    return s.energy, s.mu


def _e0(energy, norm):
    """Maximum of dμ/dE (the files are already normalised; E0 only places the pre-edge search)."""
    return float(energy[np.argmax(np.gradient(norm, energy))])


@functools.cache
def _centroid(name):
    e, n = _ref(name)
    return fit_preedge(e, n, _e0(e, n), settings=SETTINGS, seed=0).centroid


def test_preedge_centroid_interval_covers_the_seed_scatter_when_two_noise_levels_fit():
    """Fe2O3's pre-edge: F(noise) has two minima within 0.2-0.5 nat (0.0007 and 0.002). At the lowest one alone
    seeds 0 and 1 landed on different minima, centroids 7113.25 and 7113.33 eV against quoted sd of 0.01-0.02
    eV; with the noise integrated out each interval covers the other seed's answer."""
    from xafs_stream.analyses.preprocess import normalize_spectrum
    from xafs_stream.data import SPECTRA_DIR
    from xafs_stream.engines.bayes import SmcSettings

    spec = read_spectrum(SPECTRA_DIR / "fe2o3_rt1.xmu")
    norm = normalize_spectrum(WorkUnit("t", "spectrum", "merge", {"energy": spec.energy, "mu": spec.mu}), {}, {})
    e, y, e0 = norm.arrays["energy"], norm.arrays["norm"], norm.summary["e0"]
    a, b = (fit_preedge(e, y, e0, settings=SmcSettings(), seed=seed, stop_at_rhat=1.05) for seed in (0, 1))
    assert abs(a.centroid.median - b.centroid.median) < 2 * math.hypot(a.centroid.err, b.centroid.err)
    assert min(a.centroid.err, b.centroid.err) > 0.03  # the two noise levels' centroids are 0.08 eV apart
    assert a.centroid_rhat <= 1.05 and b.centroid_rhat <= 1.05


def test_preedge_centroid_separates_fe2_and_fe3_end_members():
    """LiFe(II)PO4 / Fe(III)PO4 (same beamline and grid: the cleanest end-member pair of the data set).
    Published separation 1.4 eV (mean over many compounds, ±0.1); single compounds scatter by about
    ±0.2 eV each and our window / background choice moves centroids by up to ±0.3 eV: tolerance ±0.5 eV."""
    c2, c3 = _centroid("life(ii)po4"), _centroid("fe(iii)po4")
    assert c2.err < 0.5 and c3.err < 0.5
    assert abs((c3.median - c2.median) - 1.4) < 0.5


def test_siderite_and_hematite_centroids_are_near_the_published_values():
    """Wilke et al. (2001): siderite (Fe2+) 7112.1 eV, Fe3+ in octahedral oxides about 7113.5 eV. These ALS
    10.3.2 spectra were measured on other days than Wilke's and their calibration may differ by a few
    tenths of an eV; their separation comes out near 1.9 eV (not the 1.4 eV mean), so each compound is
    compared with its published value instead: ±0.4 eV (siderite) and ±0.6 eV (hematite)."""
    fe2, fe3 = _centroid("als1032_siderite_Fe2.e"), _centroid("als1032_hematite_Fe3.e")
    assert abs(fe2.median - 7112.1) < 0.4
    assert abs(fe3.median - 7113.5) < 0.6
    assert fe3.median - fe2.median > 1.0


def _unit_and_upstream(name="fe(iii)po4", index="merge"):
    e, n = _ref(name)
    unit = WorkUnit("run-1", "spectrum", index, {"energy": e, "mu": n}, {"element": "Fe", "edge": "K"})
    upstream = {
        "xafs.normalize": AnalysisResult(
            arrays={"energy": e, "norm": n, "flat": n}, summary={"e0": _e0(e, n)}
        )
    }
    return unit, upstream


QUICK = {"k_max": 2, "sampler": "remc", "n_burn": 100, "n_sweeps": 200, "n_replicas": 12}
QUICK_SMC = {"k_max": 2, "n_particles": 64, "mode_starts": 64}  # the default sampler, smaller


@pytest.mark.parametrize("config", [QUICK, QUICK_SMC], ids=["remc", "smc"])
def test_worker_analysis_stores_flat_summary_and_arrays(config):
    registry = default_registry()
    assert "bayes.xanes" in registry
    analysis = registry["bayes.xanes"]
    assert analysis.unit_kind == "spectrum" and analysis.requires == ("xafs.normalize",)
    unit, upstream = _unit_and_upstream()
    res = analysis.func(unit, upstream, config)
    s = res.summary
    assert s["bayes.K"] in (1, 2)
    assert s["bayes.sampler"] == config.get("sampler", "smc")
    # K = 1, 2 until a fit does not converge: a stopped search names the K, and the verdict says so
    if "bayes.K_unconverged" in s:
        assert s["bayes.K_unconverged"] == s["bayes.K"] + 1 and s["bayes.rhat_unconverged"] > 1.05
        assert any("did not converge" in r for r in res.verdict_reasons) and res.verdict != "ok"
    else:
        assert s["bayes.rhat_max"] <= 1.05 or s["bayes.K"] == 1
    searched = res.arrays["bayes_k"].size  # a search stopped early has no F for the K it did not keep or run
    assert searched == 2 or res.verdict != "ok"
    assert {f"bayes.F.K{k}" for k in range(1, searched + 1)} | {
        "bayes.noise",
        "bayes.peak1.center",
        "bayes.peak1.center_err",
        "bayes.peak1.height",
        "bayes.peak1.width",
        "bayes.preedge_centroid",
    } <= set(s)
    assert all(v is None or isinstance(v, (int, float, str, bool)) for v in s.values())
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in s.values())
    assert s["bayes.noise"] > 0 and math.isfinite(s["bayes.F.K1"])
    assert abs(s["bayes.preedge_centroid"] - 7114.8) < 0.5  # FePO4: a single pre-edge peak near 7114.8 eV
    # the centroid's own convergence is in the summary and, past 1.05, in the verdict
    pre_rhat = s["bayes.preedge_rhat"]
    assert (pre_rhat > 1.05) == any(r.startswith("pre-edge centroid") for r in res.verdict_reasons)
    if pre_rhat > 1.05:
        assert res.verdict != "ok"
    n_fit = res.arrays["bayes_energy"].size
    for name, arr in res.arrays.items():
        assert len(res.dims[name]) == arr.ndim
        if res.dims[name] == ("energy_fit",):
            assert arr.size == n_fit
    assert res.arrays["bayes_F"].shape == (searched,)
    assert res.arrays["bayes_samples"].shape[1] == len(res.params["parameter_names"])
    e = res.arrays["bayes_energy"]
    assert e[0] >= upstream["xafs.normalize"].summary["e0"] - 20 - 1e-9


def test_worker_analysis_fits_merged_spectra_unless_told_to_fit_every_repeat():
    func = default_registry()["bayes.xanes"].func
    repeat, upstream = _unit_and_upstream(index=0)
    with pytest.raises(SkipAnalysis, match="merged spectra"):
        func(repeat, upstream, QUICK)
    assert func(repeat, upstream, {**QUICK, "units": "all"}).summary["bayes.K"] in (1, 2)
    with pytest.raises(InputError, match="units must be"):
        func(repeat, upstream, {"units": "some"})
    with pytest.raises(InputError, match="collapsed must be true or false"):
        func(repeat, upstream, {"sampler": "remc", "collapsed": "yes"})
    with pytest.raises(InputError, match="n_sweeps apply to sampler 'remc', but the sampler is 'smc'"):
        func(repeat, upstream, {"n_sweeps": 100})
    with pytest.raises(InputError, match="n_particles apply to sampler 'smc'"):
        func(repeat, upstream, {"sampler": "remc", "n_particles": 100})
    with pytest.raises(InputError, match="sampler must be 'smc' or 'remc'"):
        func(repeat, upstream, {"sampler": "mcmc"})
    with pytest.raises(InputError, match="stop_unconverged must be true or false"):
        func(repeat, upstream, {"stop_unconverged": "yes"})


def test_worker_analysis_skips_and_rejects_bad_input():
    registry = default_registry()
    func = registry["bayes.xanes"].func
    unit, upstream = _unit_and_upstream()
    with pytest.raises(SkipAnalysis):
        func(unit, {}, {})
    with pytest.raises(InputError, match="unknown keys"):
        func(unit, upstream, {"kmax": 3})
    with pytest.raises(InputError, match="k_max must be an integer"):
        func(unit, upstream, {"k_max": "four"})
    with pytest.raises(InputError, match="region"):
        func(unit, upstream, {"region": 5})
    far = {"xafs.normalize": AnalysisResult(arrays=upstream["xafs.normalize"].arrays, summary={"e0": 9000.0})}
    with pytest.raises(SkipAnalysis, match="XANES region"):
        func(unit, far, QUICK)
    bad = dict(upstream["xafs.normalize"].arrays)
    bad["norm"] = bad["norm"].copy()
    bad["norm"][100] = np.nan
    nan_up = {"xafs.normalize": AnalysisResult(arrays=bad, summary=upstream["xafs.normalize"].summary)}
    with pytest.raises(InputError, match="NaN"):
        func(unit, nan_up, QUICK)


def test_xanes_fit_input_errors():
    e, n = _ref("fe(iii)po4")
    with pytest.raises(InputError, match="contains 0 data point"):
        fit_xanes(e, n, 7130.0, region=(100.0, 120.0))
    with pytest.raises(InputError, match="outside the energy range"):
        fit_xanes(e, n, 8000.0)
    with pytest.raises(InputError, match="K must be >= 1"):
        fit_xanes(e, n, 7128.0, k_range=range(2))
