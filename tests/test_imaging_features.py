"""Per-pixel features against synthetic spectra whose edge, white line, pre-edge peak and noise are known."""

import numpy as np
import pytest

from xafs_stream.engines.errors import InputError
from xafs_stream.engines.imaging.features import (
    half_step_energy,
    noise_second_difference,
    pixel_features,
    preedge_peak,
    white_line,
)

E = np.concatenate([np.linspace(7080, 7105, 26), np.linspace(7105.5, 7150, 90), np.linspace(7152, 7250, 50)])


def _spectrum(e_half, wl_e=7132.0, wl_h=0.6, pre_e=7113.0, pre_h=0.08):
    edge = 0.5 + np.arctan((E - e_half) / 2.0) / np.pi
    return edge + wl_h * np.exp(-0.5 * ((E - wl_e) / 2.5) ** 2) + pre_h * np.exp(-0.5 * ((E - pre_e) / 1.0) ** 2)


def test_half_step_energy_of_an_arctan_edge():
    e_half = np.array([7120.3, 7123.9])
    norm = np.vstack([0.5 + np.arctan((E - c) / 2.0) / np.pi for c in e_half])
    np.testing.assert_allclose(half_step_energy(E, norm, e_half + 1), e_half, atol=0.02)


def test_white_line_of_a_gaussian_peak():
    wl = np.exp(-0.5 * ((E - 7131.7) / 3.0) ** 2)[None] * 1.5 + 1.0
    e_pk, h_pk = white_line(E, wl, np.array([7120.0]), 30.0)
    assert e_pk[0] == pytest.approx(7131.7, abs=0.05)
    assert h_pk[0] == pytest.approx(2.5, abs=0.01)


def test_preedge_centroid_of_a_gaussian_pre_peak():
    spec = _spectrum(7124.0)[None]
    c, _ = preedge_peak(E, spec, np.array([7124.0]), (-16.0, -6.0))
    assert c[0] == pytest.approx(7113.0, abs=0.15)
    # on a linear background the baseline is exact, so the area is the Gaussian's
    line = 0.01 * (E - 7100) + 0.08 * np.exp(-0.5 * ((E - 7113.0) / 1.0) ** 2)
    c, a = preedge_peak(E, line[None], np.array([7124.0]), (-18.0, -4.0))
    assert c[0] == pytest.approx(7113.0, abs=0.05)
    assert a[0] == pytest.approx(0.08 * np.sqrt(2 * np.pi), rel=0.03)


def test_noise_estimate_on_white_noise():
    rng = np.random.default_rng(0)
    mu = _spectrum(7124.0)[None] + rng.normal(0, 0.02, (400, E.size))
    est = noise_second_difference(E, mu)
    assert np.median(est) == pytest.approx(0.02, rel=0.08)


def test_pixel_features_of_shifted_edges_and_masks():
    rng = np.random.default_rng(1)
    rows = [1.5 * _spectrum(7121.0) + 0.2, 0.7 * _spectrum(7125.0) + 0.1]
    mu = np.vstack(rows + [np.full(E.size, np.nan), np.zeros(E.size)]) + rng.normal(0, 1e-4, (4, E.size))
    mu[3] = 0.0  # an all-zero pixel (flat)
    f = pixel_features(E, mu)
    assert f.reasons["nan"] == 1 and f.reasons["flat"] == 1
    assert list(f.usable) == [True, True, False, False]
    # the edge position follows the generating half-step energies (normalisation shifts them slightly)
    assert f.values["edge_position"][1] - f.values["edge_position"][0] == pytest.approx(4.0, abs=0.3)
    assert f.values["whiteline_energy"][0] == pytest.approx(7132.0, abs=0.6)
    assert np.isnan(f.values["edge_step"][2:]).all()


def test_bad_input():
    with pytest.raises(InputError, match="mu must have shape"):
        pixel_features(E, np.zeros((3, E.size - 1)))
    with pytest.raises(InputError, match="strictly increasing"):
        pixel_features(E[::-1], np.zeros((3, E.size)))
    with pytest.raises(InputError, match="refs must have shape"):
        pixel_features(E, np.zeros((3, E.size)), refs=np.zeros((2, 5)))
