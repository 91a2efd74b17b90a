"""Spatial statistics against brute force and fields of known correlation."""

import numpy as np
import pytest
from scipy import ndimage

from xafs_stream.engines.imaging.spatial import cross_correlation, domain_sizes, variogram


@pytest.mark.parametrize("shape, max_lag, offset", [((25, 30), 3, 0.0), ((4, 40), 20, 0.0), ((40, 3), 12, 0.0),
                                                    ((33, 33), 32, 0.0), ((2, 9), 8, 0.0), ((30, 30), 10, 7112.0)])
def test_variogram_matches_brute_force_with_mask(shape, max_lag, offset):
    """Every lag ring against a direct sum, also where the lags reach past a side (the transforms are padded
    by the largest lag, not doubled: an alias must never add pairs), and on a map far from zero (an edge
    energy in eV: the transforms' cancellation must not cost precision)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=shape).cumsum(axis=1) + offset
    valid = rng.random(z.shape) > 0.2
    v = variogram(z, valid, max_lag=max_lag)
    assert v.pairs.size == max_lag
    ys, xs = np.nonzero(valid)
    for r in range(1, max_lag + 1):
        sq, n = 0.0, 0
        for dy in range(-r - 1, r + 2):
            for dx in range(-r - 1, r + 2):
                if int(np.rint(np.hypot(dy, dx))) != r:
                    continue
                y2, x2 = ys + dy, xs + dx
                ok = (y2 >= 0) & (y2 < z.shape[0]) & (x2 >= 0) & (x2 < z.shape[1])
                ok[ok] &= valid[y2[ok], x2[ok]]
                sq += np.sum((z[ys[ok], xs[ok]] - z[y2[ok], x2[ok]]) ** 2)
                n += ok.sum()
        assert v.pairs[r - 1] == n
        assert v.gamma[r - 1] == pytest.approx(sq / (2 * n), rel=1e-9)


@pytest.mark.parametrize("width", [3.0, 6.0])
def test_correlation_length_of_a_gaussian_filtered_field(width):
    """White noise filtered with a Gaussian of width s has autocorrelation exp(-r^2 / 4 s^2): 1/e at 2 s."""
    rng = np.random.default_rng(1)
    f = ndimage.gaussian_filter(rng.normal(size=(320, 320)), width, mode="wrap")
    f /= f.std()
    noisy = f + rng.normal(0, 0.5, f.shape)
    v = variogram(noisy, max_lag=40, nugget=0.25)  # the noise variance as nugget
    assert v.correlation_length == pytest.approx(2 * width, rel=0.1)
    assert variogram(noisy, max_lag=40).correlation_length == pytest.approx(2 * width, rel=0.15)


def test_domain_sizes_of_a_constructed_map():
    lab = np.zeros((10, 12), int)
    lab[:, 6:] = 1          # 60 px of label 1
    lab[2:4, 1:3] = 1       # a 4 px island of label 1 inside label 0 (label 0: 56 px, one domain)
    lab[8:, 8:] = 2         # 8 px of label 2 (label 1 keeps 52 px)
    d = domain_sizes(lab)
    assert sorted(d.areas.tolist()) == [4, 8, 52, 56]
    assert d.n_domains == 4
    assert d.area_weighted_mean == pytest.approx((16 + 64 + 52**2 + 56**2) / 120)


def test_cross_correlation():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 50))
    b = 0.6 * a + 0.8 * rng.normal(size=(50, 50))
    assert cross_correlation(a, b) == pytest.approx(0.6, abs=0.05)
    a[0, 0] = np.nan
    assert np.isfinite(cross_correlation(a, b))
