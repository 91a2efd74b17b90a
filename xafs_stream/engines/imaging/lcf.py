"""Linear-combination fitting of many pixel spectra against a few reference spectra.

Model per pixel: ``y(E) = sum_p c_p ref_p(E) + b(E)`` with ``c_p >= 0`` (non-negative weights), a free
background ``b`` (none, a constant, or a line in E; any sign) and optionally ``sum_p c_p = 1``. On normalised
spectra use a constant and ``sum_to_one``; on raw absorption (optical density) a line absorbs the pre-edge
background and ``sum_p c_p`` is the thickness in units of the references' edge step.

Why not a loop over ``scipy.optimize.nnls``: all pixels share one design matrix, so the exact constrained
solution can be found for every pixel at once. The optimum has some support S (the references with c_p > 0);
on S it equals the unconstrained (or equality-constrained) least-squares solution, which is feasible; and
every feasible support solution is a feasible point, so its residual is no smaller. The optimum is therefore
the feasible support solution with the smallest residual. With R references there are 2**R supports; each is
one small matrix product for all pixels. benchmarks/bench_imaging.py measures it against a per-pixel
``scipy.optimize.nnls`` loop (the test suite checks it gives the same answers).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..errors import InputError

MAX_REFS = 8  # 2**8 supports; beyond that use a per-pixel solver


@dataclass
class LcfResult:
    """Per-pixel linear-combination fit.

    Attributes
    ----------
    weights : ndarray of shape (n_refs, n_pix), the fitted c_p (>= 0)
    offset : ndarray of shape (n_pix,), the background at the centre of the energy range (0 when not fitted)
    slope : ndarray of shape (n_pix,), background slope per eV (0 unless ``background="linear"``)
    total : ndarray of shape (n_pix,), sum_p c_p (1 with ``sum_to_one``; relative thickness otherwise)
    fractions : ndarray of shape (n_refs, n_pix), c_p / total (NaN where total <= 0)
    weights_sd : ndarray of shape (n_refs, n_pix), standard errors of c_p (unconstrained linearisation)
    weights_ls : ndarray of shape (n_refs, n_pix), the least-squares weights without the non-negativity
        constraint (linear in the data, so unbiased with Gaussian noise of covariance ``cov_ls`` x rms^2:
        the input the map MRF smooths)
    cov_ls : ndarray of shape (n_refs, n_refs), covariance of ``weights_ls`` per unit noise variance
    rms : ndarray of shape (n_pix,), residual standard deviation (spectrum units)
    n_active : ndarray of shape (n_pix,) int, number of references with c_p > 0
    """

    weights: np.ndarray
    offset: np.ndarray
    slope: np.ndarray
    total: np.ndarray
    fractions: np.ndarray
    weights_sd: np.ndarray
    rms: np.ndarray
    n_active: np.ndarray
    weights_ls: np.ndarray | None = None
    cov_ls: np.ndarray | None = None


def refs_on_energy(ref_energy: np.ndarray, ref_mu: np.ndarray, energy: np.ndarray, *, name: str = "reference",
                   tol_ev: float = 1e-3) -> np.ndarray:
    """Interpolate a reference spectrum onto ``energy`` (eV); a range that does not cover it raises InputError."""
    ref_energy = np.asarray(ref_energy, float)
    ref_mu = np.asarray(ref_mu, float)
    if ref_energy.shape != ref_mu.shape or ref_energy.ndim != 1:
        raise InputError(f"{name}: energy and mu must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(ref_energy)) and np.all(np.isfinite(ref_mu))):
        raise InputError(f"{name}: contains NaN or inf")
    order = np.argsort(ref_energy)
    ref_energy, ref_mu = ref_energy[order], ref_mu[order]
    if energy[0] < ref_energy[0] - tol_ev or energy[-1] > ref_energy[-1] + tol_ev:
        raise InputError(
            f"{name}: covers {ref_energy[0]:.2f}-{ref_energy[-1]:.2f} eV, but the stack spans "
            f"{energy[0]:.2f}-{energy[-1]:.2f} eV (references are not extrapolated)"
        )
    return np.interp(energy, ref_energy, ref_mu)


def _check(spectra: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spectra = np.asarray(spectra, dtype=np.float64)
    refs = np.asarray(refs, dtype=np.float64)
    if refs.ndim != 2 or refs.shape[0] < 1:
        raise InputError(f"refs must have shape (n_refs, n_energies), got {refs.shape}")
    if refs.shape[0] > MAX_REFS:
        raise InputError(f"refs: at most {MAX_REFS} references, got {refs.shape[0]}")
    if spectra.ndim != 2 or spectra.shape[1] != refs.shape[1]:
        raise InputError(
            f"spectra must have shape (n_pixels, {refs.shape[1]}) to match refs, got {spectra.shape}"
        )
    if not np.all(np.isfinite(refs)):
        raise InputError("refs contain NaN or inf")
    return spectra, refs


BACKGROUNDS = ("none", "constant", "linear")


def fit_lcf(
    spectra: np.ndarray,
    refs: np.ndarray,
    *,
    energy: np.ndarray | None = None,
    background: str = "constant",
    sum_to_one: bool = False,
    chunk: int = 65536,
) -> LcfResult:
    """Non-negative linear-combination fit of every pixel spectrum (exact, vectorised).

    Parameters
    ----------
    spectra : ndarray of shape (n_pix, n_e); rows with NaN give NaN results
    refs : ndarray of shape (n_refs, n_e), references on the same energies (see :func:`refs_on_energy`)
    energy : ndarray of shape (n_e,), eV; needed for ``background="linear"``
    background : "none", "constant" or "linear" (free, any sign)
    sum_to_one : constrain sum_p c_p = 1 (for normalised spectra)
    chunk : pixels per block (memory)

    Returns
    -------
    LcfResult
    """
    spectra, refs = _check(spectra, refs)
    n_refs, n_e = refs.shape
    if background not in BACKGROUNDS:
        raise InputError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    columns = [refs]
    scale = 1.0
    if background in ("constant", "linear"):
        columns.append(np.ones((1, n_e)))
    if background == "linear":
        if energy is None or np.shape(energy) != (n_e,):
            raise InputError(f"energy of shape ({n_e},) is needed for a linear background")
        energy = np.asarray(energy, float)
        centre = 0.5 * (energy[0] + energy[-1])
        scale = max(0.5 * (energy[-1] - energy[0]), 1e-12)
        columns.append(((energy - centre) / scale)[None, :])
    offset = background != "none"
    n_bg = {"none": 0, "constant": 1, "linear": 2}[background]
    n_par = n_refs + n_bg
    if n_e <= n_par:
        raise InputError(f"spectra: {n_e} energies cannot determine {n_par} parameters")
    design = np.vstack(columns)  # (n_par, n_e)
    gram = design @ design.T
    if np.linalg.matrix_rank(gram) < n_par:
        raise InputError("refs are linearly dependent (with the constant): the fit is not unique")
    supports = _supports(n_refs, sum_to_one)
    solvers = [_support_solver(gram, s, n_refs, n_bg, sum_to_one) for s in supports]
    cov_ls = _unconstrained_cov(gram, n_refs, n_bg, sum_to_one)
    cov_diag = np.clip(np.diag(cov_ls), 0, None)
    full_idx, full_mat, full_const = solvers[-1]  # the support with every reference

    n_pix = spectra.shape[0]
    weights = np.full((n_refs, n_pix), np.nan)
    c0 = np.full(n_pix, np.nan)
    c1 = np.full(n_pix, np.nan)
    rms = np.full(n_pix, np.nan)
    n_active = np.zeros(n_pix, dtype=np.int64)
    weights_ls = np.full((n_refs, n_pix), np.nan)
    # every support's affine map b -> c as one (n_par, S * n_par) matrix (zero outside the support), so that
    # all supports are solved with one matrix product (~4x faster for 8 supports, see docs/measurements.md)
    n_sup = len(supports)
    maps = np.zeros((n_sup, n_par, n_par))
    consts = np.zeros((n_sup, n_par))
    for s, (idx, mat, const) in enumerate(solvers):
        maps[s][np.ix_(idx, idx)] = mat.T
        consts[s, idx] = const
    stacked = maps.transpose(1, 0, 2).reshape(n_par, n_sup * n_par)
    in_support = np.zeros((n_sup, n_refs), dtype=bool)
    for s, support in enumerate(supports):
        in_support[s, list(support)] = True
    support_size = in_support.sum(axis=1)
    for start in range(0, n_pix, chunk):
        y = spectra[start:start + chunk]
        good = np.all(np.isfinite(y), axis=1)
        if not good.all():
            y = y[good]
        b = y @ design.T  # (n, n_par)
        yy = np.einsum("ij,ij->i", y, y)
        c_all = (b @ stacked).reshape(-1, n_sup, n_par) + consts  # (n, S, n_par)
        # residual of every support, |y - A c|^2 = y.y - c.(2 b - G c); inf where a weight is negative
        t = (c_all.reshape(-1, n_par) @ gram).reshape(c_all.shape)
        np.subtract(2 * b[:, None, :], t, out=t)
        t *= c_all
        # (sums and tests over the short last axis as explicit loops: numpy's reductions over an axis of
        # 3-5 elements cost more than the arithmetic)
        rss_all = yy[:, None] - t[:, :, 0]
        negative = (c_all[:, :, 0] < 0) & in_support[:, 0]
        for p in range(1, n_par):
            rss_all -= t[:, :, p]
            if p < n_refs:
                negative |= (c_all[:, :, p] < 0) & in_support[:, p]
        rss_all[negative] = np.inf
        best_s = np.argmin(rss_all, axis=1)  # the first smallest wins
        rows = np.arange(y.shape[0])
        best_rss = rss_all[rows, best_s]
        best = c_all[rows, best_s]
        best_k = support_size[best_s]
        sl = np.flatnonzero(good) + start
        weights_ls[:, sl] = (b[:, full_idx] @ full_mat.T + full_const)[:, :n_refs].T
        weights[:, sl] = best[:, :n_refs].T
        c0[sl] = best[:, n_refs] if offset else 0.0
        c1[sl] = best[:, n_refs + 1] / scale if n_bg == 2 else 0.0
        dof = max(n_e - n_par, 1)
        rms[sl] = np.sqrt(np.clip(best_rss, 0, None) / dof)
        n_active[sl] = best_k
    total = np.sum(weights, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(total > 0, weights / total, np.nan)
    weights_sd = np.sqrt(cov_diag[:, None]) * rms[None, :]
    return LcfResult(weights=weights, offset=c0, slope=c1, total=total, fractions=fractions, weights_sd=weights_sd,
                     rms=rms, n_active=n_active, weights_ls=weights_ls, cov_ls=cov_ls)


def _supports(n_refs: int, sum_to_one: bool) -> list[tuple[int, ...]]:
    out = []
    for k in range(0 if not sum_to_one else 1, n_refs + 1):
        out.extend(combinations(range(n_refs), k))
    return out


def _support_solver(gram, support, n_refs, n_bg, sum_to_one):
    """Affine map b_S -> c_S of the (equality-constrained) least squares on the support (+ background)."""
    idx = list(support) + list(range(n_refs, n_refs + n_bg))
    g = gram[np.ix_(idx, idx)]
    if not idx:
        return np.array(idx, dtype=np.int64), np.zeros((0, 0)), np.zeros(0)
    g_inv = np.linalg.inv(g)
    if not sum_to_one:
        return np.array(idx, dtype=np.int64), g_inv, np.zeros(len(idx))
    # minimise |y - A c|^2 subject to e.c = 1 (e marks the reference columns): Lagrange multiplier
    e = np.array([1.0] * len(support) + [0.0] * n_bg)
    ge = g_inv @ e
    denom = e @ ge
    # c = G^-1 b - G^-1 e (e.G^-1 b - 1) / (e.G^-1 e)
    mat = g_inv - np.outer(ge, e @ g_inv) / denom
    const = ge / denom
    return np.array(idx, dtype=np.int64), mat, const


def _unconstrained_cov(gram, n_refs, n_bg, sum_to_one):
    g_inv = np.linalg.inv(gram)
    if sum_to_one:
        e = np.array([1.0] * n_refs + [0.0] * n_bg)
        ge = g_inv @ e
        g_inv = g_inv - np.outer(ge, ge) / (e @ ge)
    return g_inv[:n_refs, :n_refs]
