"""The map MRF on the simulated beamline's phantom (known labels, fractions and generating values).

Noise: Gaussian on μt, sigma = 0.75 (the phantom's edge step is ~1), where per-pixel phase labels are at most
80 % correct. After the MRF: >= 95 % correct, fraction RMSE at least halved, and the learned hyperparameters
match the generating values: the noise variance of each weight map equals sigma^2 x the LCF's covariance,
and the thickness map's correlation length is twice the phantom's smoothing width (the autocorrelation of a
Gaussian-filtered white field of width s falls to 1/e at 2 s).
"""

import numpy as np
import pytest
from xafs_stream.simulated_devices.phantom import make_phantom

from xafs_stream.engines.imaging import ImagingSettings, analyze_stack, fit_phase_model
from xafs_stream.engines.imaging.spatial import variogram

SIGMA = 0.75


@pytest.fixture(scope="module", params=[pytest.param((96, 2), id="96px-seed2"),
                                        pytest.param((128, 3), id="128px-seed3", marks=pytest.mark.slow)])
def solved(request):
    n, seed = request.param
    ph = make_phantom((n, n), seed=seed)
    rng = np.random.default_rng(seed + 100)
    stack = ph.absorption_stack() + rng.normal(0, SIGMA, (ph.energy.size, n, n))
    settings = ImagingSettings(refs=ph.refs, ref_names=ph.phases)
    return ph, settings, analyze_stack(ph.energy, stack, settings)


def test_labels_per_pixel_at_most_80_percent_after_mrf_at_least_95(solved):
    ph, settings, res = solved
    weights = np.stack([res.raw[f"weight.{p}"].ravel() for p in ph.phases], axis=1)
    per_pixel_model = fit_phase_model(weights, 3, order_by=(0, 1, 2),
                                      means_init=np.median(weights.sum(axis=1)) * np.eye(3))
    per_pixel = per_pixel_model.predict(weights).reshape(ph.shape)
    argmax_fraction = np.argmax(np.stack([res.raw[f"fraction.{p}"] for p in ph.phases]), axis=0)
    assert np.mean(per_pixel == ph.labels) <= 0.80
    assert np.mean(argmax_fraction == ph.labels) <= 0.80
    assert np.mean(res.model.labels == ph.labels) >= 0.95
    # the labels users see: the dominant reference of the Gaussian-MRF weights, and no "none" pixel where the
    # element is everywhere
    assert np.mean(res.labels == ph.labels) >= 0.95
    assert res.phase_names == (*ph.phases, "none") and not np.any(res.labels == len(ph.phases))


def test_fraction_rmse_at_least_halved(solved):
    ph, settings, res = solved
    raw = np.stack([res.raw[f"fraction.{p}"] for p in ph.phases])
    mrf = np.stack([res.fractions[p] for p in ph.phases])
    rmse_raw = np.sqrt(np.nanmean((raw - ph.fractions) ** 2))
    rmse_mrf = np.sqrt(np.mean((mrf - ph.fractions) ** 2))
    assert rmse_mrf <= 0.5 * rmse_raw


def test_learned_noise_matches_the_injected_noise(solved):
    ph, settings, res = solved
    from xafs_stream.engines.imaging.lcf import fit_lcf

    cov = fit_lcf(ph.absorption_stack()[:, :1, 0].T, ph.refs, energy=ph.energy, background="linear").cov_ls
    for i, p in enumerate(ph.phases):
        learned = res.model.gmrf[f"weight.{p}"].s2
        assert learned == pytest.approx(SIGMA**2 * cov[i, i], rel=0.12), p
    assert res.model.gmrf["lcf_total"].s2 == pytest.approx(SIGMA**2 * cov.sum(), rel=0.12)


def test_thickness_correlation_length_matches_the_generating_width(solved):
    ph, settings, res = solved
    expected = 2 * ph.generating["gradient_length_px"]
    stat = res.statistics["corr_length.lcf_total"]  # raw map, learned noise variance as nugget
    truth = variogram(ph.thickness, max_lag=32).correlation_length  # what this finite phantom realises
    assert stat == pytest.approx(truth, rel=0.15)
    assert stat == pytest.approx(expected, rel=0.25)


def test_mrf_maps_and_uncertainty_are_consistent(solved):
    ph, settings, res = solved
    m = res.model
    # label uncertainty is low where labels are right, higher where wrong
    wrong = m.labels != ph.labels
    assert np.nanmean(1 - m.prob_max[wrong]) > np.nanmean(1 - m.prob_max[~wrong])
    # the smoothed thickness is closer to the truth than the per-pixel one, and its posterior sd is honest
    err_raw = np.sqrt(np.mean((res.raw["lcf_total"] - ph.thickness) ** 2))
    err = m.smoothed["lcf_total"] - ph.thickness
    assert np.sqrt(np.mean(err**2)) < 0.5 * err_raw
    z = err / m.sd["lcf_total"]
    assert 0.5 < np.std(z) < 2.0


def test_fft_threads_change_no_bit_of_a_batch_map():
    """``fft_workers`` (the CLI gives the map model every core) splits whole 1-D transforms between threads:
    a map larger than the matrix-transform size (so the GMRF preconditioner runs on DCTs) comes out the same
    bit for bit."""
    from xafs_stream.engines.imaging.gmrf import MATRIX_TRANSFORM_MAX_SIDE

    n = MATRIX_TRANSFORM_MAX_SIDE + 32
    ph = make_phantom((n, n), seed=4)
    rng = np.random.default_rng(4)
    stack = ph.absorption_stack() + rng.normal(0, 0.5, (ph.energy.size, n, n))
    settings = ImagingSettings(refs=ph.refs, ref_names=ph.phases)
    one = analyze_stack(ph.energy, stack, settings, fft_workers=1)
    two = analyze_stack(ph.energy, stack, settings, fft_workers=2)
    assert np.array_equal(one.labels, two.labels)
    assert np.mean(one.labels == np.asarray(ph.labels)) > 0.9  # a real map, not an empty one
    for name in one.model.smoothed:
        assert np.array_equal(one.model.smoothed[name], two.model.smoothed[name], equal_nan=True), name
    assert one.statistics.keys() == two.statistics.keys()
    for key, value in one.statistics.items():
        assert value == two.statistics[key] or (np.isnan(value) and np.isnan(two.statistics[key])), key
