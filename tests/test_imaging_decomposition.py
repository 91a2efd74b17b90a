"""PCA / NMF scores and the phase mixture on the phantom's normalised spectra (3 known phases)."""

import numpy as np
import pytest
from xafs_stream.simulated_devices.phantom import make_phantom

from xafs_stream.engines.errors import InputError
from xafs_stream.engines.imaging import fit_phase_model, nmf_scores, pca_scores


@pytest.fixture(scope="module")
def spectra():
    ph = make_phantom((40, 40), seed=5)
    rng = np.random.default_rng(6)
    norm = ph.normalized_stack().reshape(ph.energy.size, -1).T
    return ph, norm + rng.normal(0, 0.01, norm.shape)


def test_pca_finds_two_mixing_directions(spectra):
    """Three end members summing to one span a 2-D affine space: 2 components hold the variance."""
    ph, x = spectra
    d = pca_scores(x, 4)
    assert d.explained[:2].sum() > 0.98
    assert d.explained[2] < 0.01


def test_nmf_scores_follow_the_fractions(spectra):
    ph, x = spectra
    d = nmf_scores(x, 3)
    frac = ph.fractions.reshape(3, -1)
    # each true fraction map is matched by one NMF score map; NMF is unique only up to a rotation inside the
    # data cone (the reason for orthogonal NMF in Tanimoto et al. 2021), so not perfectly: 0.93-0.97 here
    corr = np.corrcoef(np.vstack([d.scores.T, frac]))[:3, 3:]
    assert np.all(np.max(np.abs(corr), axis=0) > 0.9)


def test_phase_model_orders_phases_by_reference(spectra):
    ph, _ = spectra
    frac = ph.fractions.reshape(3, -1).T
    rng = np.random.default_rng(7)
    model = fit_phase_model(frac + rng.normal(0, 0.05, frac.shape), 3, order_by=(0, 1, 2))
    assert np.mean(model.predict(frac) == ph.labels.ravel()) > 0.97
    with pytest.raises(InputError, match="need more usable pixels"):
        fit_phase_model(frac[:4], 3)
    with pytest.raises(InputError, match="n_components"):
        pca_scores(np.full((5, 10), np.nan), 2)
