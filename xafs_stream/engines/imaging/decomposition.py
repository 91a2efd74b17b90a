"""PCA / NMF scores and phase clustering of pixel spectra or features, with scikit-learn (MANTiS-style).

``pca_scores`` and ``nmf_scores`` decompose normalised pixel spectra (n_pix, n_e); ``PhaseModel`` clusters a
per-pixel feature vector (LCF fractions, PCA scores or scalar features) into phases with a Gaussian mixture
(or k-means, as a mixture of equal spherical Gaussians) and gives the per-pixel class log-likelihoods that
the Potts MRF (:mod:`.potts`) uses as its data term.

Cluster order is made canonical (by the mean of the first feature, or by the reference a cluster is richest
in) so that refits on more data keep their meaning: a phase label means the same thing from tile to tile.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF, PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from ..errors import InputError


@dataclass
class Decomposition:
    """Scores and components of a matrix factorisation.

    Attributes
    ----------
    scores : ndarray of shape (n_pix, n_components), NaN for rows that were not usable
    components : ndarray of shape (n_components, n_e)
    explained : ndarray of shape (n_components,), explained variance ratio (PCA) or NaN (NMF)
    reconstruction_error : float, Frobenius norm of the residual of the usable rows
    """

    scores: np.ndarray
    components: np.ndarray
    explained: np.ndarray
    reconstruction_error: float


def _rows(spectra: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    spectra = np.asarray(spectra, dtype=np.float64)
    if spectra.ndim != 2:
        raise InputError(f"spectra must have shape (n_pixels, n_energies), got {spectra.shape}")
    good = np.all(np.isfinite(spectra), axis=1)
    if not 1 <= n_components <= min(int(good.sum()), spectra.shape[1]):
        raise InputError(
            f"n_components must be 1..{min(int(good.sum()), spectra.shape[1])} for {int(good.sum())} usable "
            f"spectra of {spectra.shape[1]} points, got {n_components}"
        )
    return spectra, good


def pca_scores(spectra: np.ndarray, n_components: int = 3, *, seed: int = 0) -> Decomposition:
    """Principal component scores of the usable (finite) rows of ``spectra`` (n_pix, n_e)."""
    spectra, good = _rows(spectra, n_components)
    pca = PCA(n_components=n_components, random_state=seed)
    s = pca.fit_transform(spectra[good])
    scores = np.full((spectra.shape[0], n_components), np.nan)
    scores[good] = s
    err = float(np.linalg.norm(spectra[good] - pca.inverse_transform(s)))
    return Decomposition(scores, pca.components_.copy(), pca.explained_variance_ratio_.copy(), err)


def nmf_scores(spectra: np.ndarray, n_components: int = 2, *, seed: int = 0, max_iter: int = 2000) -> Decomposition:
    """Non-negative matrix factorisation spectra ~ W H of the usable rows (NNMA in MANTiS terms).

    NMF needs non-negative data: the spectra are shifted by their global minimum when it is negative (the
    shift is a constant component and does not change the factorisation's meaning for normalised XANES).
    """
    spectra, good = _rows(spectra, n_components)
    data = spectra[good]
    shift = min(0.0, float(data.min()))
    model = NMF(n_components=n_components, init="nndsvda", random_state=seed, max_iter=max_iter)
    w = model.fit_transform(data - shift)
    scores = np.full((spectra.shape[0], n_components), np.nan)
    scores[good] = w
    return Decomposition(scores, model.components_.copy(), np.full(n_components, np.nan),
                         float(model.reconstruction_err_))


# rows per block of PhaseModel.component_log_likelihood (its temporaries are C x d floats per row)
_LL_CHUNK = 65536


@dataclass
class PhaseModel:
    """A fitted phase model: a Gaussian mixture in a feature space of dimension d, components grouped into phases.

    Attributes
    ----------
    means : ndarray of shape (C, d), component means
    covariances : ndarray of shape (C, d, d)
    weights : ndarray of shape (C,)
    scale : ndarray of shape (d,), feature scaling used internally (features / scale)
    component_phase : ndarray of shape (C,) int, the phase of each component (a phase may have several)
    method : "gmm" or "kmeans"
    """

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    scale: np.ndarray
    component_phase: np.ndarray
    method: str = "gmm"

    @property
    def n_phases(self) -> int:
        return int(np.max(self.component_phase)) + 1

    def component_log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log pi_c + log N(x | mean_c, cov_c) for rows of x (n, d); shape (C, n), NaN rows give NaN."""
        x = np.asarray(x, float)
        n_comp, d = self.means.shape
        out = np.full((n_comp, x.shape[0]), np.nan)
        good = np.all(np.isfinite(x), axis=1)
        every = bool(good.all())
        xg = x if every else x[good]
        # Every component's whitening z_c = chol_c^-1 (x - mean_c) / scale as one (d, C d) matrix product, and
        # the squared norms summed with an explicit loop over the d columns: ~3x faster than a triangular
        # solve per component and numpy's sum over an axis of 3 elements (see docs/measurements.md;
        # tests/test_imaging_fast_kernels.py checks it against the direct form)
        mats, offsets, consts = [], [], []
        for c in range(n_comp):
            cov = self.covariances[c] / np.outer(self.scale, self.scale)
            chol = np.linalg.cholesky(cov)
            white = np.linalg.solve(chol, np.diag(1.0 / self.scale))  # chol^-1 diag(1 / scale), (d, d)
            mats.append(white.T)
            offsets.append(white @ self.means[c])
            log_det = 2 * np.sum(np.log(np.diag(chol)))
            consts.append(np.log(self.weights[c]) - 0.5 * (log_det + d * np.log(2 * np.pi)))
        mat, offset, const = np.hstack(mats), np.concatenate(offsets), np.asarray(consts)[:, None]
        ll = out if every else np.empty((n_comp, xg.shape[0]))
        for lo in range(0, xg.shape[0], _LL_CHUNK):  # bounded temporaries on whole maps
            z = xg[lo:lo + _LL_CHUNK] @ mat  # (n, C d)
            z -= offset
            z *= z
            z = z.reshape(-1, n_comp, d)
            sq = z[:, :, 0].copy()
            for j in range(1, d):
                sq += z[:, :, j]
            ll[:, lo:lo + _LL_CHUNK] = const - 0.5 * sq.T
        if not every:
            out[:, good] = ll
        return out

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log p(x, phase k) summed over the phase's components, shape (n_phases, n)."""
        comp = self.component_log_likelihood(x)
        out = np.full((self.n_phases, comp.shape[1]), -np.inf)
        for k in range(self.n_phases):
            sel = comp[self.component_phase == k]
            if sel.shape[0] == 1:  # one component: the log-sum-exp is the value itself (non-finite: NaN below)
                out[k] = sel[0]
            elif sel.shape[0]:
                top = np.max(sel, axis=0)
                with np.errstate(invalid="ignore"):
                    out[k] = top + np.log(np.sum(np.exp(sel - top), axis=0))
        out[:, ~np.all(np.isfinite(comp), axis=0)] = np.nan
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        ll = self.log_likelihood(x)
        labels = np.full(x.shape[0], -1, dtype=np.int64)
        good = np.all(~np.isnan(ll), axis=0)
        labels[good] = np.argmax(ll[:, good], axis=0)
        return labels

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means, "covariances": self.covariances, "weights": self.weights,
                "scale": self.scale, "component_phase": self.component_phase, "method": np.array(self.method)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> PhaseModel:
        return cls(np.asarray(a["means"], float), np.asarray(a["covariances"], float),
                   np.asarray(a["weights"], float), np.asarray(a["scale"], float),
                   np.asarray(a["component_phase"], np.int64), str(a["method"]))


def fit_phase_model(
    x: np.ndarray,
    n_phases: int,
    *,
    method: str = "gmm",
    order_by: Sequence[int] | None = None,
    init: PhaseModel | None = None,
    means_init: np.ndarray | None = None,
    component_phase: np.ndarray | None = None,
    seed: int = 0,
    tol: float = 1e-6,
    max_iter: int = 500,
    reg_covar: float = 1e-6,
) -> PhaseModel:
    """Cluster feature vectors x (n, d) into ``n_phases`` phases.

    Parameters
    ----------
    x : ndarray of shape (n, d); rows with NaN are ignored
    method : "gmm" (full-covariance Gaussian mixture, EM) or "kmeans"
    order_by : sequence of feature indices, or None. Phase i is the cluster with the largest mean in feature
        ``order_by[i]`` (greedy); the remaining clusters follow by descending first feature. With LCF weights
        as features, ``order_by=range(n_refs)`` makes phase i "the cluster richest in reference i". None: all
        phases by descending first feature. Ignored when ``component_phase`` is given.
    init : warm start (a previous model with the same components)
    means_init : ndarray of shape (C, d), starting component means for a cold start (e.g. the pure
        references); default k-means with ``n_phases`` components
    component_phase : ndarray of shape (C,), the phase of each component of ``means_init`` (several
        components per phase model a phase whose cluster is not Gaussian, e.g. a ray of thicknesses)
    seed : random seed of the k-means initialisation

    Returns
    -------
    PhaseModel
    """
    x = np.asarray(x, float)
    if x.ndim != 2:
        raise InputError(f"features must have shape (n, d), got {x.shape}")
    good = np.all(np.isfinite(x), axis=1)
    xg = x[good]
    if method not in ("gmm", "kmeans"):
        raise InputError(f"method must be 'gmm' or 'kmeans', got {method!r}")
    n_comp = n_phases
    if component_phase is not None:
        component_phase = np.asarray(component_phase, np.int64)
        if means_init is None or len(component_phase) != len(means_init):
            raise InputError("component_phase needs means_init with one row per component")
        if set(component_phase.tolist()) != set(range(n_phases)):
            raise InputError(f"component_phase must cover phases 0..{n_phases - 1}")
        n_comp = len(component_phase)
    if n_phases < 1 or xg.shape[0] < max(2 * n_comp, n_comp * (x.shape[1] + 1)):
        raise InputError(f"need more usable pixels ({xg.shape[0]}) to find {n_phases} phases in {x.shape[1]} features")
    scale = np.std(xg, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    xs = xg / scale
    if method == "kmeans":
        km = KMeans(n_clusters=n_comp, n_init=4, random_state=seed).fit(xs)
        labels = km.labels_
        means = km.cluster_centers_
        var = np.mean(np.sum((xs - means[labels]) ** 2, axis=1)) / x.shape[1]
        covs = np.stack([np.eye(x.shape[1]) * var] * n_comp)
        weights = np.bincount(labels, minlength=n_comp) / labels.size
    else:
        kw = {}
        if means_init is not None:
            means_init = np.asarray(means_init, float)
            if means_init.shape != (n_comp, x.shape[1]):
                raise InputError(f"means_init must have shape ({n_comp}, {x.shape[1]}), got {means_init.shape}")
            kw = {"means_init": means_init / scale}
        if init is not None and init.means.shape[0] == n_comp:
            kw = {"weights_init": init.weights, "means_init": init.means / scale,
                  "precisions_init": np.linalg.inv(init.covariances / np.outer(scale, scale))}
        with warnings.catch_warnings():
            # EM that stops at max_iter still gives a usable mixture; convergence is not needed for labels
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(n_components=n_comp, covariance_type="full", tol=tol, max_iter=max_iter,
                                 reg_covar=reg_covar, random_state=seed, **kw).fit(xs)
        means, covs, weights = gm.means_, gm.covariances_, gm.weights_
    if component_phase is not None:
        order = np.arange(n_comp)
        phases = component_phase
    else:
        order = _canonical_order(means, order_by)
        phases = np.arange(n_comp)
    return PhaseModel(means=means[order] * scale, covariances=covs[order] * np.outer(scale, scale),
                      weights=np.asarray(weights)[order], scale=scale, component_phase=phases, method=method)


def _canonical_order(means: np.ndarray, order_by: np.ndarray | None) -> np.ndarray:
    k = means.shape[0]
    if order_by is None:
        return np.argsort(-means[:, 0], kind="stable")
    # assign clusters to references greedily by the largest mean fraction; leftovers by first feature
    remaining = list(range(k))
    order = []
    for ref in np.asarray(order_by, int):
        if not remaining:
            break
        best = max(remaining, key=lambda c: means[c, ref])
        order.append(best)
        remaining.remove(best)
    order += sorted(remaining, key=lambda c: -means[c, 0])
    return np.array(order)
