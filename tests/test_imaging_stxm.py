"""Real data: the ALS Fe L-edge STXM stack (tests/data/stxm_fe_L.npz, see tests/data/README.md).

Checks against physical truth that does not come from this code: the Fe L3 peak of the cluster-averaged
spectra (708.25 eV for Fe2+, 709.67 eV for Fe3+, the reference region spectra's), the authors' region mask
(Fe-bearing areas), and coherent domains: the MRF labels form far larger connected domains than per-pixel
labels. The picture is saved as artifacts/stxm_fe_L_map.png.
"""

from pathlib import Path

import numpy as np
import pytest

from xafs_stream.engines.imaging import ImagingSettings, analyze_stack, domain_sizes
from xafs_stream.io.stack import read_stack

DATA = Path(__file__).parent / "data" / "stxm_fe_L.npz"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def result():
    stack = read_stack(DATA)
    names = ("reduced", "oxidized")
    settings = ImagingSettings(refs=np.vstack([stack.refs[n] for n in names]), ref_names=names,
                               background_phase=True)
    return stack, settings, analyze_stack(stack.energy, stack.stack, settings)


def _l3_peak(energy, spectrum):
    sel = (energy > 705) & (energy < 712)
    e, y = energy[sel], spectrum[sel]
    k = int(np.argmax(y))
    a, b, c = np.polyfit(e[k - 1:k + 2] - e[k], y[k - 1:k + 2], 2)
    return e[k] - b / (2 * a)


def test_reference_spectra_peaks():
    stack = read_stack(DATA)
    assert _l3_peak(stack.energy, stack.refs["reduced"]) == pytest.approx(708.25, abs=0.15)
    assert _l3_peak(stack.energy, stack.refs["oxidized"]) == pytest.approx(709.67, abs=0.15)


def test_phase_averaged_spectra_have_the_fe2_and_fe3_l3_peaks(result):
    stack, settings, res = result
    labels = res.model.labels
    assert res.phase_names == ("reduced", "oxidized", "none")
    for k, expected in ((0, 708.25), (1, 709.67)):
        sel = labels == k
        assert sel.sum() > 500
        mean_od = stack.stack[:, sel].mean(axis=1)
        assert _l3_peak(stack.energy, mean_od) == pytest.approx(expected, abs=0.35), k


def test_fe_bearing_phases_cover_the_authors_region_mask(result):
    stack, settings, res = result
    fe = res.model.labels < 2
    assert np.mean(fe[stack.mask]) > 0.9          # the selected regions are found
    assert np.mean(~fe[~stack.mask]) > 0.55        # and most of the rest is called empty


def test_coherent_domains_and_picture(result):
    stack, settings, res = result
    m = res.model
    per_pixel = np.where(m.class_valid, np.argmax(np.nan_to_num(m.unary, nan=-np.inf), axis=0), -1)
    mrf = domain_sizes(m.labels, m.labels < 2)
    raw = domain_sizes(per_pixel, per_pixel < 2)
    assert mrf.mean_area > 3 * raw.mean_area
    assert mrf.n_domains < 0.5 * raw.n_domains
    frac = res.fractions["reduced"]
    assert np.isnan(frac[m.labels == 2]).all()
    # the Fe2+ fraction is high in the reduced phase and low in the oxidized one
    assert np.nanmedian(frac[m.labels == 0]) > 0.6
    assert np.nanmedian(frac[m.labels == 1]) < 0.3
    from xafs_stream.cli.map import plot_maps

    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "stxm_fe_L_map.png"
    plot_maps(res, settings, str(out), title="ALS STXM Fe L-edge: Fe2+/Fe3+ map")
    assert out.stat().st_size > 10_000
