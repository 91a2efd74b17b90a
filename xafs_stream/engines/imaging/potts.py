"""Potts Markov random field for phase labels: ICM restoration and pseudo-likelihood coupling (Besag 1986).

Energy of a labelling l (4-neighbour grid, valid pixels only):

    E(l) = - sum_i U_i(l_i) + beta * sum_{i~j} [l_i != l_j]

with ``U_i(k) = log p(y_i | k) + log pi_k`` from the phase model (a Gaussian mixture). ICM (iterated conditional
modes) updates the two checkerboard colours in turn: pixels of one colour are conditionally independent
given the other, so each half-sweep is exact coordinate descent and vectorised. ``beta`` is the maximiser of
Besag's pseudo-likelihood of the current labelling under the Potts prior,

    PL(beta) = sum_i [beta n_i(l_i) - log sum_k exp(beta n_i(k))],   n_i(k) = neighbours of i with label k,

alternated with ICM until beta settles. PL only depends on the histogram of neighbour configurations
(n_i(l_i), n_i(0..K-1)), which is kept as a small table that can be updated window by window.
Per-pixel uncertainty is the local conditional posterior p(l_i = k | l_neighbours, y_i) at the ICM solution.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

BETA_BOUNDS = (0.0, 5.0)
MAX_K = 8


def neighbour_counts(labels: np.ndarray, valid: np.ndarray, n_labels: int) -> np.ndarray:
    """Number of valid 4-neighbours with each label, shape (n_labels, ny, nx)."""
    lab = np.where(valid, labels, -1)
    counts = np.zeros((n_labels,) + labels.shape, dtype=np.int16)
    for k in range(n_labels):
        is_k = (lab == k).astype(np.int16)
        c = counts[k]
        c[1:, :] += is_k[:-1, :]
        c[:-1, :] += is_k[1:, :]
        c[:, 1:] += is_k[:, :-1]
        c[:, :-1] += is_k[:, 1:]
    return counts


def icm(
    unary: np.ndarray,
    valid: np.ndarray,
    beta: float,
    labels: np.ndarray | None = None,
    *,
    update: np.ndarray | None = None,
    max_sweeps: int = 100,
) -> tuple[np.ndarray, int]:
    """Iterated conditional modes on a checkerboard schedule.

    Parameters
    ----------
    unary : ndarray of shape (K, ny, nx), U_i(k) (log-likelihood plus log prior weight)
    valid : ndarray of shape (ny, nx) bool
    beta : Potts coupling (>= 0)
    labels : start labelling (default: per-pixel argmax of ``unary``); -1 at invalid pixels
    update : ndarray of shape (ny, nx) bool, pixels allowed to change (default: all valid); the others
        act as a fixed boundary (window solves)

    Returns
    -------
    labels : ndarray of shape (ny, nx) int64, -1 at invalid pixels
    sweeps : number of full sweeps done
    """
    n_labels = unary.shape[0]
    start = np.argmax(unary, axis=0) if labels is None else labels
    lab = np.where(valid, start, -1).astype(np.int64)
    movable = valid if update is None else (valid & update)
    ny, nx = valid.shape
    odd = (np.arange(ny)[:, None] % 2) != (np.arange(nx)[None, :] % 2)  # bool, 1 byte per pixel
    colour = [~odd & movable, odd & movable]
    del odd
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        changed = 0
        for c in (0, 1):
            score = neighbour_counts(lab, valid, n_labels) * float(beta)  # float64 whatever beta's type
            score += unary  # in place: one (K, ny, nx) float array, not two
            best = np.argmax(score, axis=0)
            del score
            sel = colour[c] & (best != lab)
            changed += int(sel.sum())
            lab[sel] = best[sel]
        if changed == 0:
            break
    return lab, sweeps


def conditional_probabilities(unary: np.ndarray, labels: np.ndarray, valid: np.ndarray, beta: float) -> np.ndarray:
    """p(l_i = k | neighbour labels, y_i), shape (K, ny, nx); NaN at invalid pixels."""
    p = neighbour_counts(labels, valid, unary.shape[0]) * float(beta)
    p += unary  # the score, then the probabilities, in one (K, ny, nx) array (large maps)
    p -= p.max(axis=0, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=0, keepdims=True)
    p[:, ~valid] = np.nan
    return p


# --------------------------------------------------------------------------------------------- coupling


def configuration_codes(labels: np.ndarray, valid: np.ndarray, n_labels: int, region=None) -> np.ndarray:
    """One integer per valid pixel (in ``region``, a (slice, slice) window) encoding (n_i(l_i), n_i(0..K-1)).

    Counts are 0..4, so base 5 digits: code = n_self + 5 * sum_k n_i(k) 5**k.
    """
    if n_labels > MAX_K:
        raise ValueError(f"at most {MAX_K} labels, got {n_labels}")
    counts = neighbour_counts(labels, valid, n_labels).astype(np.int64)
    if region is not None:
        counts = counts[(slice(None),) + tuple(region)]
        labels = labels[tuple(region)]
        valid = valid[tuple(region)]
    sel = valid & (labels >= 0)
    lab = labels[sel]
    cnt = counts[:, sel]
    n_self = np.take_along_axis(cnt, lab[None], axis=0)[0]
    powers = 5 ** np.arange(n_labels, dtype=np.int64)
    return n_self + 5 * (powers @ cnt)


def configuration_histogram(codes: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(codes, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _decode(codes: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    n_self = codes % 5
    rest = codes // 5
    counts = np.stack([(rest // 5**k) % 5 for k in range(n_labels)], axis=1)
    return n_self, counts


def pseudo_likelihood_beta(histogram: dict[int, int], n_labels: int) -> float:
    """Maximum pseudo-likelihood Potts coupling from a configuration histogram (within ``BETA_BOUNDS``)."""
    if not histogram:
        return 0.0
    codes = np.fromiter(histogram.keys(), dtype=np.int64)
    weights = np.fromiter(histogram.values(), dtype=np.float64)
    n_self, counts = _decode(codes, n_labels)

    def neg_pl(beta: float) -> float:
        z = beta * counts
        zmax = z.max(axis=1)
        log_norm = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
        return -float(np.sum(weights * (beta * n_self - log_norm)))

    res = optimize.minimize_scalar(neg_pl, bounds=BETA_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(res.x)
