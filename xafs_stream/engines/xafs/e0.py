"""E0, the absorption threshold: the energy of the maximum of the (smoothed) first derivative of μ(E).

Follows the IFEFFIT / Larch ``find_e0`` convention so that E0 agrees with the field's tools: a first pass on the
raw derivative picks the highest point whose two neighbours are also high (a lone glitch is not an edge),
then a second pass on the Lorentzian-smoothed derivative, within ±75 points of the first guess, refines it.
E0 is always one of the measured energies. Vectorised over a stack of spectra on one energy grid; for one
spectrum the second pass runs on Python numbers (``_second_pass_one``), with the same window rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ._ops import SCALAR
from ._smooth import LorentzSmoother
from ._validate import SpectrumErrors, check_energy, check_finite_rows, check_stack

_WINDOW_HALF = 75  # points each side of the first guess searched in the second pass
_FALLBACK_HALF = 20  # same when the first guess is in the first 5 % of the scan (likely a glitch)


@dataclass
class E0Search:
    """E0 of each spectrum in a stack: ``e0`` (n_spectra,) eV and ``index`` into the energy grid.

    ``found`` is False where no point of high derivative with high neighbours exists (no edge).
    """

    e0: np.ndarray
    index: np.ndarray
    found: np.ndarray


def _energy_step(en: np.ndarray) -> float:
    """Typical energy step: mean of the 10 smallest steps after skipping the smallest 1 % (Larch rule).

    With fewer than 100 points nothing is skipped and Larch's own rule yields NaN, which its caller turns
    into a step of 1 eV; that outcome is reproduced here so E0 agrees on short (XANES) scans.
    """
    nskip = int(0.01 * en.size)
    if nskip == 0:
        return 1.0
    inner = en[:-1][nskip:-nskip]
    steps = np.sort(inner[1:] - inner[:-1])
    smallest = steps[nskip : nskip + 10]
    return float(smallest.sum()) / smallest.size


def _pick_edge(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the edge in each row of a finite derivative array ``d`` (m, L); returns (index, found).

    The derivative is scaled to 0..1 over the row's interior (all but ``nmin`` points at each end); points
    above 0.6 (0.3 for rows of ≤ 20 points) are "high", with the threshold lowered for rows with fewer than
    3 high points; the edge is the highest interior point whose two neighbours are also high. The scaling
    is monotonic, so thresholds are compared on d itself.
    """
    m, length = d.shape
    nmin = max(3, int(length * 0.02))
    if length < 2 * nmin + 3:
        return np.zeros(m, dtype=np.intp), np.zeros(m, dtype=bool)
    core = d[:, nmin : length - nmin]
    dmin = core.min(axis=1)
    ptp = np.maximum(1e-10, core.max(axis=1) - dmin)
    frac = 0.60 if length > 20 else 0.30
    high = d > (dmin + frac * ptp)[:, None]  # threshold > dmin, so "high" points are above the minimum
    # interior candidates i in [nmin, length - nmin] with both neighbours high
    lo, hi = nmin, length - nmin + 1
    best, found = _best_candidate(d, high, lo, hi)
    # Rows with fewer than 3 high points get a lower threshold. A row with a candidate has at least 3, so only
    # the rows without one are counted and redone (the same result as counting every row first, ~12 %
    # faster for 4096 x 99 points, see docs/measurements.md; tests/test_imaging_fast_kernels.py)
    miss = np.flatnonzero(~found)
    if miss.size:
        rows = miss[np.count_nonzero(high[miss], axis=1) < 3]
        if rows.size:
            # lower the threshold (twice at most) for rows with almost no high points; else every point above
            # the minimum counts
            sub = d[rows]
            h2 = sub > (dmin[rows] + frac / 2 * ptp[rows])[:, None]
            h4 = sub > (dmin[rows] + frac / 4 * ptp[rows])[:, None]
            use2 = np.count_nonzero(h2, axis=1) > 3
            use4 = ~use2 & (np.count_nonzero(h4, axis=1) >= 3)
            high_rows = np.where(use2[:, None], h2, np.where(use4[:, None], h4, sub > dmin[rows, None]))
            best[rows], found[rows] = _best_candidate(sub, high_rows, lo, hi)
    return np.where(found, best + lo, 0), found


def _best_candidate(d: np.ndarray, high: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Position (from ``lo``) of the highest point i in [lo, hi) of each row of ``d`` with ``high`` at i - 1,
    i and i + 1, and whether the row has one."""
    cand = high[:, lo:hi] & high[:, lo - 1 : hi - 1]
    cand &= high[:, lo + 1 : hi + 1]
    score = np.full(cand.shape, -np.inf)
    np.copyto(score, d[:, lo:hi], where=cand)
    best = np.argmax(score, axis=1)
    found = np.isfinite(score[np.arange(d.shape[0]), best])
    return best, found


def _derivative(mu: np.ndarray, en: np.ndarray) -> np.ndarray:
    """dμ/dE as the ratio of index gradients (Larch's convention: central differences, one-sided at the ends)."""
    d = np.empty_like(mu)
    np.subtract(mu[:, 2:], mu[:, :-2], out=d[:, 1:-1])
    d[:, 1:-1] *= (1.0 / (en[2:] - en[:-2]))[None, :]
    d[:, 0] = (mu[:, 1] - mu[:, 0]) / (en[1] - en[0])
    d[:, -1] = (mu[:, -1] - mu[:, -2]) / (en[-1] - en[-2])
    return d


def _window_derivative(
    d_full: np.ndarray, mu: np.ndarray, rows: np.ndarray, energy: np.ndarray, a: int, b: int
) -> np.ndarray:
    """dμ/dE of ``rows`` over the points a..b-1 as if computed on that window alone (one-sided at its ends)."""
    d = d_full[rows, a:b]
    ends = mu[rows[:, None], np.array([a, a + 1, b - 2, b - 1])[None, :]]
    d[:, 0] = (ends[:, 1] - ends[:, 0]) / (energy[a + 1] - energy[a])
    d[:, -1] = (ends[:, 3] - ends[:, 2]) / (energy[b - 1] - energy[b - 2])
    return d


def _second_pass_window(i1, n: int, xp):
    """Points [start, stop) of the second pass around the first guess ``i1`` (an array of indices with
    ``xp=np``, or an int with ``xp=SCALAR``) and whether the guess is in the first 5 % (likely a glitch)."""
    early = i1 < 0.05 * n
    start = xp.where(early, xp.maximum(3, i1 - _FALLBACK_HALF), xp.maximum(3, i1 - _WINDOW_HALF))
    stop = xp.where(early, n - 3, xp.minimum(i1 + _WINDOW_HALF, n - 3))
    return early, start, stop


def _smooth_width(step: float, e1, xp):
    """Larch's Lorentzian half-width (eV): the mean of the typical energy step and E0/25000, each clipped to
    0.01..1 eV (``e1`` the first-pass edge energy, array or float as for :func:`_second_pass_window`)."""
    step1 = max(0.01, min(1.0, step))
    return 0.5 * (step1 + xp.minimum(xp.maximum(e1 / 25000.0, 0.01), 1.0))


def _second_pass_one(
    energy: np.ndarray, mu: np.ndarray, d_full: np.ndarray, i1: int, smooth_ev: float | None, cache: dict
) -> E0Search:
    """The second pass of :func:`search_e0` for one spectrum (``mu`` of shape (1, n)), on Python numbers."""
    n = energy.size
    early, a, b = _second_pass_window(i1, n, SCALAR)
    if smooth_ev is None:
        e1 = float(energy.mean()) if early else float(energy[i1])
        w = float(_smooth_width(_energy_step(energy[:-1]), e1, SCALAR))
    else:
        w = float(smooth_ev)
    if b - 1 - a < 3:
        i = min(a + 2, n - 1)
        return E0Search(e0=energy[i : i + 1].copy(), index=np.array([i]), found=np.zeros(1, dtype=bool))
    d = _window_derivative(d_full, mu, np.zeros(1, dtype=np.intp), energy, a, b - 1)
    smoother = cache.get((a, b, w))
    if smoother is None:
        smoother = cache[(a, b, w)] = LorentzSmoother(energy[a : b - 1], sigma=w, xstep=w)
    ix, ok = _pick_edge(smoother(d))
    i = a + (int(ix[0]) if ok[0] and ix[0] >= 1 else 2)
    return E0Search(
        e0=energy[i : i + 1].copy(), index=np.array([i]), found=np.array([bool(ok[0] and ix[0] >= 1)])
    )


# Stacks of at least this many spectra are smoothed with the cached matrices of _fused_operator (one per
# smoothing window, built once per energy grid), smaller ones with the FFT path of LorentzSmoother (a one-off
# call on a few spectra would spend more on building matrices than on smoothing).
_FUSED_MIN_SPECTRA = 64


@lru_cache(maxsize=256)
def _fused_operator(x_bytes: bytes, width: float) -> np.ndarray:
    """(L, L) matrix K with ``mu[:, a:b] @ K`` = the Lorentz-smoothed window derivative of each row, for the
    window energies ``x`` (L,) given as bytes (the cache key) and the half-width ``width`` (eV).

    Both steps are linear in μ: K = D @ S with D the window derivative (central differences, one-sided at the
    ends, as :func:`_window_derivative`) and S the smoothing matrix (row i = the smoothed unit vector i).
    In a stack every parameter of the second pass is a function of the first-guess index, so one energy grid
    needs at most one matrix per grid point; keeping them between calls saves rebuilding them for every
    chunk or image tile (4096-pixel XANES tiles: the builds were most of the E0 time). Read-only.
    """
    x = np.frombuffer(x_bytes, dtype=np.float64)
    size = x.size
    d = np.zeros((size, size))
    inner = np.arange(1, size - 1)
    step = 1.0 / (x[2:] - x[:-2])
    d[inner + 1, inner] = step
    d[inner - 1, inner] = -step
    d[1, 0], d[0, 0] = 1.0 / (x[1] - x[0]), -1.0 / (x[1] - x[0])
    d[-1, -1], d[-2, -1] = 1.0 / (x[-1] - x[-2]), -1.0 / (x[-1] - x[-2])
    op = d @ LorentzSmoother(x, sigma=width, xstep=width)(np.eye(size))
    op.setflags(write=False)
    return op


def search_e0(
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    smooth_ev: float | None = None,
    cache: dict | None = None,
) -> E0Search:
    """Kernel of :func:`find_e0`: clean float64 ``energy`` (n,) and finite ``mu`` (m, n); no input checks.

    ``smooth_ev`` sets the Lorentzian half-width (eV) of the second pass; None uses the Larch rule
    (the mean of the typical energy step and E0/25000, each clipped to 0.01..1 eV). ``cache`` (a dict)
    keeps smoothing operators between calls on the same grid (chunks of one stack).
    """
    n = energy.size
    m = mu.shape[0]
    cache = {} if cache is None else cache
    # Larch drops the last point in each pass (an artefact of its ordering check); kept for agreement.
    en1 = energy[:-1]
    d_full = _derivative(mu[:, :-1], en1)
    i1, _ = _pick_edge(d_full)
    if m == 1:
        return _second_pass_one(energy, mu, d_full, int(i1[0]), smooth_ev, cache)
    early, start, stop = _second_pass_window(i1, n, np)
    e1 = np.where(early, energy.mean(), en1[i1])
    if smooth_ev is None:
        width = _smooth_width(_energy_step(en1), e1, np)
    else:
        width = np.full(m, float(smooth_ev))

    e0 = np.empty(m)
    index = np.empty(m, dtype=np.intp)
    found = np.empty(m, dtype=bool)
    # spectra sharing a window and a smoothing width share one smoothing operator; the edge is then picked
    # in one pass over all the spectra of a window (their rows have the same length)
    wkey = np.round(width * 1e9).astype(np.int64)
    key = (start.astype(np.int64) * (n + 1) + stop) * (2**31) + wkey
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(first.size + 1))
    fused = m >= _FUSED_MIN_SPECTRA
    mu_sorted = mu[order] if fused else None  # the spectra of each group as one contiguous block
    g = 0
    while g < first.size:
        j = first[g]
        a, b = int(start[j]), int(stop[j])
        g_end = g + 1  # groups g .. g_end - 1 share the window (sorted by key: adjacent)
        while g_end < first.size and start[first[g_end]] == a and stop[first[g_end]] == b:
            g_end += 1
        rows = order[bounds[g] : bounds[g_end]]
        if b - 1 - a < 3:
            e0[rows], index[rows], found[rows] = energy[min(a + 2, n - 1)], min(a + 2, n - 1), False
            g = g_end
            continue
        smoothed = np.empty((rows.size, b - 1 - a))
        for h in range(g, g_end):
            w = float(width[first[h]])
            out = smoothed[bounds[h] - bounds[g] : bounds[h + 1] - bounds[g]]
            if fused:
                # derivative and smoothing as one (L, L) matrix, kept between calls (see _fused_operator)
                np.matmul(mu_sorted[bounds[h] : bounds[h + 1], a : b - 1],
                          _fused_operator(energy[a : b - 1].tobytes(), w), out=out)
            else:
                sub = order[bounds[h] : bounds[h + 1]]
                d = _window_derivative(d_full, mu, sub, energy, a, b - 1)
                smoother = cache.get((a, b, w))
                if smoother is None:
                    smoother = cache[(a, b, w)] = LorentzSmoother(energy[a : b - 1], sigma=w, xstep=w)
                out[:] = smoother(d)
        ix, ok = _pick_edge(smoothed)
        ok &= ix >= 1
        ix = np.where(ok, ix, 2)
        index[rows] = a + ix
        e0[rows] = energy[a + ix]
        found[rows] = ok
        g = g_end
    return E0Search(e0=e0, index=index, found=found)


def find_e0(energy: np.ndarray, mu: np.ndarray, *, smooth_ev: float | None = None) -> float | np.ndarray:
    """E0 (eV): the energy of the maximum of the smoothed derivative dμ/dE.

    Parameters
    ----------
    energy : ndarray of shape (n,), in eV, strictly increasing
    mu : ndarray of shape (n,) or (n_spectra, n)
    smooth_ev : Lorentzian half-width (eV) for the derivative; default: Larch's rule (≈0.3-0.7 eV)

    Returns
    -------
    float for one spectrum (raises InputError if there is no edge); ndarray of shape (n_spectra,) for a
    stack, NaN where a spectrum has no edge or non-finite values (use :func:`pre_edge` for the reasons).
    """
    e = check_energy(energy)
    mu2, single = check_stack(mu, e.size)
    if smooth_ev is not None and not (np.isfinite(smooth_ev) and smooth_ev > 0):
        raise InputError(f"smooth_ev: must be a positive number of eV, got {smooth_ev!r}")
    status = SpectrumErrors(mu2.shape[0])
    check_finite_rows(mu2, e, status)
    out = np.full(mu2.shape[0], np.nan)
    good = np.flatnonzero(status.ok)
    if good.size:
        res = search_e0(e, mu2[good], smooth_ev=smooth_ev)
        out[good] = np.where(res.found, res.e0, np.nan)
        status.fail(good[~res.found], "no edge found: no point of high dμ/dE with high neighbours")
    status.raise_if_single(single)
    return float(out[0]) if single else out
