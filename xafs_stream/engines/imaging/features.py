"""Per-pixel XANES features of an image stack (METHODS §3), vectorised over pixels.

From the normalised spectrum (``xafs_stream.engines.xafs.pre_edge``, the Athena/Larch convention):
edge step (thickness, absorption units), E0 (maximum of the smoothed derivative), edge position (energy where
the normalised μ first reaches 1/2 next to E0, linear interpolation), white-line energy and height (local
quadratic least squares around the maximum above the edge), pre-edge centroid and area (after a linear
baseline across a window below the edge). From the raw spectrum: the noise per point (robust, model-free,
from second differences) and, when references are given, a linear-combination fit (:mod:`.lcf`).

Each feature carries its own validity (NaN where it could not be measured): a pixel whose normalisation
fails at high noise still has its LCF fractions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..xafs import pre_edge
from .lcf import fit_lcf

FEATURE_NAMES = (
    "edge_step", "e0", "edge_position", "whiteline_energy", "whiteline_height", "preedge_centroid",
    "preedge_area", "noise",
)


@dataclass
class PixelFeatures:
    """Features of n_pix pixel spectra.

    Attributes
    ----------
    values : name -> ndarray of shape (n_pix,): edge_step (μ units), e0 / edge_position / whiteline_energy /
        preedge_centroid (eV), whiteline_height (normalised units), preedge_area (normalised units x eV),
        noise (μ units per point); plus, with references, ``lcf_total`` (thickness in reference edge steps: the
        sum of the unconstrained weights, unbiased at any noise),
        ``lcf_rms`` (μ units), ``fraction.<ref name>`` (0..1, non-negative fit) and ``weight.<ref name>``
        (unconstrained least-squares weight: linear in the data, what the map MRF smooths)
    fractions : ndarray of shape (n_refs, n_pix) or None
    ref_names : names of the references
    usable : ndarray of shape (n_pix,) bool, the spectrum is finite and not flat
    normalized : ndarray of shape (n_pix,) bool, the normalisation succeeded
    reasons : counts of masked pixels by reason
    lcf_cov_ls : ndarray of shape (n_refs, n_refs), covariance of the ``weight.*`` values per unit noise
        variance of the spectra (the same for every pixel)
    """

    values: dict[str, np.ndarray]
    fractions: np.ndarray | None
    ref_names: tuple[str, ...]
    usable: np.ndarray
    normalized: np.ndarray
    reasons: dict[str, int] = field(default_factory=dict)
    lcf_cov_ls: np.ndarray | None = None


def noise_second_difference(energy: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Noise per point of each row of ``mu`` (n_pix, n_e) from second differences on a non-uniform grid.

    d_i = y_i - (w y_{i-1} + (1 - w) y_{i+1}) with w the linear-interpolation weight has variance
    sigma^2 (1 + w^2 + (1 - w)^2) for white noise; sigma = 1.4826 * median |d / sqrt(...)| is robust to the
    few points where the edge curvature dominates.
    """
    e = energy
    w = (e[2:] - e[1:-1]) / (e[2:] - e[:-2])
    d = np.multiply(mu[:, :-2], w)
    tmp = np.multiply(mu[:, 2:], 1 - w)
    d += tmp
    np.subtract(mu[:, 1:-1], d, out=d)
    d /= np.sqrt(1 + w**2 + (1 - w) ** 2)
    np.abs(d, out=d)
    return 1.4826 * _row_median(d)


def _row_median(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=1)`` (same values), overwriting ``a``. One partition at the upper middle element
    and a maximum below it instead of np.median's partition at both middle elements: ~4.5x faster for the
    4096 x 98 values of a feature block (see docs/measurements.md)."""
    k = a.shape[1]
    hi = k // 2
    a.partition(hi, axis=1)
    if k % 2:
        return a[:, hi].copy()
    return (a[:, hi] + a[:, :hi].max(axis=1)) / 2


def half_step_energy(energy: np.ndarray, norm: np.ndarray, e0: np.ndarray) -> np.ndarray:
    """Energy where the normalised μ crosses 1/2 upwards, the crossing nearest E0 (NaN if none).

    Only the crossings are interpolated (a few per spectrum), not every point of the stack; of equally near
    crossings the lowest in energy is taken.
    """
    cross = norm[:, :-1] < 0.5
    cross &= norm[:, 1:] >= 0.5
    r, c = np.nonzero(cross)  # row-major: sorted by row, then by energy
    out = np.full(norm.shape[0], np.nan)
    if r.size == 0:
        return out
    lo, hi = norm[r, c], norm[r, c + 1]
    frac = (0.5 - lo) / (hi - lo)  # hi > lo at an upward crossing
    e_cross = energy[c] + frac * (energy[c + 1] - energy[c])
    dist = np.abs(e_cross - e0[r])
    best = np.lexsort((c, dist, r))  # by row, then distance, then energy
    first = np.ones(best.size, dtype=bool)
    first[1:] = r[best[1:]] != r[best[:-1]]
    pick = best[first]
    out[r[pick]] = e_cross[pick]
    return out


def _column_span(energy: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int]:
    """Columns [a, b) of ``energy`` that lie inside at least one row's window [lo, hi] (eV); (0, 0) if none."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return 0, 0
    a = int(np.searchsorted(energy, lo[ok].min(), side="left"))
    b = int(np.searchsorted(energy, hi[ok].max(), side="right"))
    return a, max(a, b)


def white_line(
    energy: np.ndarray, norm: np.ndarray, start: np.ndarray, window_ev: float, half_width: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Energy and height of the maximum of the normalised μ in [start, start + window_ev] (eV).

    The maximum is refined by a quadratic least-squares fit over ``2 * half_width + 1`` points around the
    highest point (reduces the upward bias of a noisy maximum); the vertex is used when it lies inside the
    fitted points and the curve opens downwards, else the highest point itself.
    """
    n_pix, n_e = norm.shape
    rows = np.arange(n_pix)
    # only the columns inside some row's window can hold a maximum (a XANES window is a third of the scan)
    c0, c1 = _column_span(energy, start, start + window_ev)
    e_win, n_win = energy[c0:c1], norm[:, c0:c1]
    inside = (e_win[None, :] >= start[:, None]) & (e_win[None, :] <= start[:, None] + window_ev)
    inside &= np.isfinite(n_win)
    masked = np.where(inside, n_win, -np.inf)
    if c1 > c0:
        k = np.argmax(masked, axis=1)
        found = np.isfinite(masked[rows, k])
        k += c0
    else:
        k = np.zeros(n_pix, dtype=np.intp)
        found = np.zeros(n_pix, dtype=bool)
    # the fitted points around grid point k, and so the least-squares operator, depend on k only: one
    # (3, m) operator per grid point instead of one normal-equation solve per pixel
    offsets = np.arange(-half_width, half_width + 1)
    grid = np.arange(n_e)
    idx_k = np.clip(grid[:, None] + offsets[None, :], 0, n_e - 1)  # (n_e, m)
    ex_k = energy[idx_k] - energy[:, None]
    vander = np.stack([np.ones_like(ex_k), ex_k, ex_k**2], axis=2)  # (n_e, m, 3)
    gram = np.einsum("kmi,kmj->kij", vander, vander)
    regular = np.abs(np.linalg.det(gram)) > 1e-12
    fit_op = np.zeros((n_e, 3, offsets.size))
    fit_op[regular] = np.linalg.solve(gram[regular], vander[regular].transpose(0, 2, 1))
    yx = np.take_along_axis(norm, idx_k[k], axis=1)
    ok = found & regular[k] & np.all(np.isfinite(yx), axis=1)
    coef = np.zeros((n_pix, 3))
    if ok.any():
        coef[ok] = np.einsum("pim,pm->pi", fit_op[k[ok]], yx[ok])
    a, b, c = coef.T
    with np.errstate(invalid="ignore", divide="ignore"):
        vertex = -b / (2 * c)
    lo, hi = ex_k.min(axis=1)[k], ex_k.max(axis=1)[k]
    use_vertex = ok & (c < 0) & (vertex >= lo) & (vertex <= hi)
    e_peak = np.where(use_vertex, energy[k] + vertex, energy[k])
    with np.errstate(invalid="ignore", divide="ignore"):
        h_peak = np.where(use_vertex, a - b**2 / (4 * c), norm[rows, k])
    e_peak[~found] = np.nan
    h_peak[~found] = np.nan
    return e_peak, h_peak


def preedge_peak(
    energy: np.ndarray, norm: np.ndarray, edge: np.ndarray, window_ev: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (eV) and area of the pre-edge peak in [edge + lo, edge + hi] above a linear baseline.

    The baseline joins the normalised μ at the two window ends (linear interpolation); negative residuals
    count as zero. NaN where the window holds fewer than 3 points or no positive residual.
    """
    lo = edge + window_ev[0]
    hi = edge + window_ev[1]
    # only the columns inside some row's window contribute (the sums below are over the window)
    c0, c1 = _column_span(energy, lo, hi)
    e_win, n_win = energy[c0:c1], norm[:, c0:c1]
    inside = (e_win[None, :] >= lo[:, None]) & (e_win[None, :] <= hi[:, None])
    n_in = inside.sum(axis=1)
    y_lo = _interp_rows(energy, norm, lo)
    y_hi = _interp_rows(energy, norm, hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (y_hi - y_lo) / (hi - lo)
    # residual above the baseline y_lo + (E - lo) slope, built in place; kept where inside the window and
    # positive (a NaN residual, where the baseline is unknown, counts as zero like a negative one), so that
    # plain sums and a matrix-vector product replace np.clip, two np.nansum and a product: ~25 % less time
    # (see docs/measurements.md; tested against full-width sums)
    resid = e_win[None, :] - lo[:, None]
    resid *= slope[:, None]
    resid += y_lo[:, None]
    np.subtract(n_win, resid, out=resid)
    keep = resid > 0
    keep &= inside
    weights = np.where(keep, resid, 0.0)
    weights *= np.gradient(energy)[None, c0:c1]
    area = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = (weights @ e_win) / area
    bad = (n_in < 3) | ~(area > 0) | ~np.isfinite(edge)
    centroid[bad] = np.nan
    area[bad | ~np.isfinite(area)] = np.nan
    return centroid, area


def _interp_rows(energy: np.ndarray, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row at its own abscissa (NaN outside the grid)."""
    j = np.clip(np.searchsorted(energy, at) - 1, 0, energy.size - 2)
    with np.errstate(invalid="ignore"):
        t = (at - energy[j]) / (energy[j + 1] - energy[j])
    r = np.arange(rows.shape[0])
    out = rows[r, j] * (1 - t) + rows[r, j + 1] * t
    out[(at < energy[0]) | (at > energy[-1]) | ~np.isfinite(at)] = np.nan
    return out


def pixel_features(
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    refs: np.ndarray | None = None,
    ref_names: tuple[str, ...] | None = None,
    lcf_background: str = "linear",
    sum_to_one: bool = False,
    normalize: dict | None = None,
    whiteline_window_ev: float = 30.0,
    preedge_window_ev: tuple[float, float] = (-16.0, -5.0),
    chunk: int = 65536,
    edge_features: bool = True,
) -> PixelFeatures:
    """Features of many pixel spectra on one energy grid.

    Parameters
    ----------
    energy : ndarray of shape (n_e,), eV, strictly increasing
    mu : ndarray of shape (n_pix, n_e), absorption (optical density); NaN rows are masked
    refs : ndarray of shape (n_refs, n_e) on ``energy``, for the linear-combination fit (optional)
    ref_names : their names (default ref0, ref1, ...)
    lcf_background : "none", "constant" or "linear" background in the fit (see :func:`.lcf.fit_lcf`)
    sum_to_one : constrain the fitted weights to sum to one (for normalised spectra)
    normalize : keyword arguments for ``pre_edge`` (pre1, pre2, norm1, norm2, nnorm, e0 ...)
    whiteline_window_ev : the white line is searched from the edge position to this many eV above it
    preedge_window_ev : pre-edge window, eV relative to the edge position
    chunk : pixels per block (bounds the temporary memory)
    edge_features : compute the K-edge features (normalisation, edge, white line, pre-edge); False leaves
        them NaN without counting failures (soft X-ray L-edge stacks, where they do not apply)

    Returns
    -------
    PixelFeatures
    """
    energy = np.asarray(energy, dtype=np.float64)
    if energy.ndim != 1 or energy.size < 5:
        raise InputError(f"energy must be 1-D with at least 5 points, got shape {energy.shape}")
    if not np.all(np.isfinite(energy)) or not np.all(np.diff(energy) > 0):
        raise InputError("energy must be finite and strictly increasing")
    mu = np.asarray(mu)
    if mu.ndim != 2 or mu.shape[1] != energy.size:
        raise InputError(f"mu must have shape (n_pixels, {energy.size}) to match energy, got {mu.shape}")
    n_refs = 0
    if refs is not None:
        refs = np.asarray(refs, dtype=np.float64)
        if refs.ndim != 2 or refs.shape[1] != energy.size:
            raise InputError(f"refs must have shape (n_refs, {energy.size}) on the stack energies, got {refs.shape}")
        n_refs = refs.shape[0]
        ref_names = tuple(ref_names) if ref_names is not None else tuple(f"ref{i}" for i in range(n_refs))
        if len(ref_names) != n_refs:
            raise InputError(f"ref_names: {len(ref_names)} names for {n_refs} references")
    else:
        ref_names = ()
    if not (preedge_window_ev[0] < preedge_window_ev[1]):
        raise InputError(f"preedge_window_ev must be (low, high) with low < high, got {preedge_window_ev}")
    if not whiteline_window_ev > 0:
        raise InputError(f"whiteline_window_ev must be > 0, got {whiteline_window_ev}")
    normalize = dict(normalize or {})

    n_pix = mu.shape[0]
    names = list(FEATURE_NAMES)
    if n_refs:
        names += ["lcf_total", "lcf_rms", "lcf_total_err"] + [f"fraction.{n}" for n in ref_names] \
            + [f"weight.{n}" for n in ref_names]
    values = {n: np.full(n_pix, np.nan) for n in names}
    fractions = np.full((n_refs, n_pix), np.nan) if n_refs else None
    usable = np.zeros(n_pix, dtype=bool)
    normalized = np.zeros(n_pix, dtype=bool)
    reasons = {"nan": 0, "flat": 0, "normalisation": 0} if edge_features else {"nan": 0, "flat": 0}
    lcf_cov = None
    for lo in range(0, n_pix, chunk):
        block = np.ascontiguousarray(mu[lo:lo + chunk], dtype=np.float64)  # row operations below
        finite = np.all(np.isfinite(block), axis=1)
        span = np.ptp(block if finite.all() else np.where(finite[:, None], block, 0.0), axis=1)
        flat = finite & (span <= 0)
        ok = finite & ~flat
        reasons["nan"] += int((~finite).sum())
        reasons["flat"] += int(flat.sum())
        usable[lo:lo + block.shape[0]] = ok
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            continue
        good = block if rows.size == block.shape[0] else block[rows]
        out = lo + rows
        values["noise"][out] = noise_second_difference(energy, good)
        if n_refs:
            fit = fit_lcf(good, refs, energy=energy, background=lcf_background, sum_to_one=sum_to_one)
            total = np.sum(fit.weights_ls, axis=0)
            # standard error of the total amount: rms · sqrt(1ᵀ C 1), C the weights' unit-noise covariance
            total_err = fit.rms * float(np.sqrt(max(np.sum(fit.cov_ls), 0.0)))
            values["lcf_total"][out] = total
            values["lcf_rms"][out] = fit.rms
            values["lcf_total_err"][out] = total_err
            fr = fit.fractions
            fractions[:, out] = fr
            for i, n in enumerate(ref_names):
                values[f"fraction.{n}"][out] = fr[i]
                values[f"weight.{n}"][out] = fit.weights_ls[i]
            lcf_cov = fit.cov_ls
        if not edge_features:
            continue
        pe = pre_edge(energy, good, **normalize)
        nok = np.asarray(pe.ok, bool)
        reasons["normalisation"] += int((~nok).sum())
        if not nok.any():
            continue
        # Rows whose normalisation failed are NaN in every output of pre_edge, and the features below give NaN
        # for them, so all rows are passed on: copying out the good rows of ``norm`` cost more than the
        # features of the failed rows (tests/test_imaging_fast_kernels.py checks the two ways agree)
        e0 = np.atleast_1d(pe.e0)
        norm = np.atleast_2d(pe.norm)
        sel = out
        normalized[out[nok]] = True
        values["edge_step"][sel] = np.atleast_1d(pe.edge_step)
        values["e0"][sel] = e0
        edge = half_step_energy(energy, norm, e0)
        values["edge_position"][sel] = edge
        wl_e, wl_h = white_line(energy, norm, np.where(np.isfinite(edge), edge, e0), whiteline_window_ev)
        values["whiteline_energy"][sel] = wl_e
        values["whiteline_height"][sel] = wl_h
        c, a = preedge_peak(energy, norm, edge, preedge_window_ev)
        values["preedge_centroid"][sel] = c
        values["preedge_area"][sel] = a
    return PixelFeatures(values=values, fractions=fractions, ref_names=ref_names, usable=usable,
                         normalized=normalized, reasons=reasons, lcf_cov_ls=lcf_cov)
