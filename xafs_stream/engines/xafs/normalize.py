"""Pre-edge line, post-edge polynomial, edge step, normalised and flattened μ(E) (IFEFFIT / Larch convention).

For each spectrum: a line is fitted to μ over [E0+pre1, E0+pre2], a polynomial of order ``nnorm`` to
μ - pre-edge over [E0+norm1, E0+norm2]; the edge step is the post-edge polynomial at E0; ``norm`` is
(μ - pre-edge) / step; ``flat`` also removes the post-edge curvature above E0. Defaults and index
conventions are Larch's so that E0 and the edge step agree with it; they adapt to short (XANES) scans.

Vectorised: a stack (n_spectra, n) on one energy grid is processed in chunks of a few thousand spectra
with a few array passes each; spectra whose fit ranges fall on the same grid indices share one
least-squares projector (solved once, applied as a matrix product), so a million-pixel XANES map takes
seconds. The pre-edge line, post-edge curve and flattened spectrum are computed from the stored
coefficients only when first asked for (each is as large as the stack).

One spectrum (1-D μ) takes a separate path with the same rules: the range rules run on Python numbers
(``xp=SCALAR``, see ``_ops.py``) and the two fits are QR solves, without the chunking, grouping and
per-row bookkeeping of a stack, which cost more than the work itself for one spectrum (tests check that
both paths give the same results and the same error messages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
from scipy.linalg.lapack import dgeqrf, dtrtrs

from ..errors import InputError
from ._ops import SCALAR
from ._validate import SpectrumErrors, check_energy, check_finite_rows, check_stack, per_spectrum
from .e0 import search_e0

MAX_NNORM = 5
_CHUNK = 4096  # spectra per vectorised pass: temporaries of a few MB stay in cache


@dataclass
class LocalPoly:
    """Per-row polynomials sum_p coefs[:, p] * ((E - centre) / scale)**p, each in its own fit-range coordinates.

    Local coordinates (u in [-1, 1] over the fit range) keep narrow, high-order fits well conditioned.
    """

    coefs: np.ndarray  # (m, order + 1)
    centre: np.ndarray  # (m,), eV
    scale: np.ndarray  # (m,), eV

    def __call__(self, energy: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Values of the selected rows at the energies ``energy`` (n,): shape (n_rows, n)."""
        c, h, k = self.centre[rows], self.scale[rows], self.coefs[rows]
        u = (energy[None, :] - c[:, None]) / h[:, None]
        out = np.repeat(k[:, -1:], energy.size, axis=1)
        for p in range(k.shape[1] - 2, -1, -1):
            out *= u
            out += k[:, p : p + 1]
        return out

    def at(self, energy: np.ndarray) -> np.ndarray:
        """Value of row i at energy[i]; ``energy`` of shape (m,)."""
        u = (energy - self.centre) / self.scale
        out = self.coefs[:, -1].copy()
        for p in range(self.coefs.shape[1] - 2, -1, -1):
            out = out * u + self.coefs[:, p]
        return out


@dataclass
class PreEdgeResult:
    """Normalisation of one spectrum or a stack.

    Attributes
    ----------
    energy : ndarray of shape (n,), eV
    e0 : float or ndarray of shape (n_spectra,), eV (NaN for failed spectra)
    edge_step : float or ndarray of shape (n_spectra,), in units of μ (NaN for failed spectra)
    norm : ndarray, same shape as mu: (μ - pre-edge line) / edge step
    ok : ndarray of shape (n_spectra,), bool: spectra that normalised (always length ≥ 1)
    errors : dict spectrum index -> reason, for the spectra with ``ok`` False
    params_used : pre1, pre2, norm1, norm2 (eV relative to E0), nnorm, npre actually used (scalars for one
        spectrum, arrays of shape (n_spectra,) for a stack), plus ``e0_given`` and ``min_edge_snr``
    noise : per-point noise of μ estimated from the pre-edge fit residual (NaN if too few points)
    edge_step_err : standard error of the edge step from that noise (NaN if unknown)
    pre_edge_line, post_edge_curve, flat : ndarrays, same shape as mu (computed on first access)
    """

    energy: np.ndarray
    e0: float | np.ndarray
    edge_step: float | np.ndarray
    norm: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    params_used: dict[str, object]
    noise: float | np.ndarray
    edge_step_err: float | np.ndarray
    _pre: LocalPoly = field(repr=False)
    _post: LocalPoly = field(repr=False)
    _ie0: np.ndarray = field(repr=False)  # index of the grid point nearest E0 (n_spectra,)
    _single: bool = field(repr=False)

    def _shape(self, a: np.ndarray) -> np.ndarray:
        return a[0] if self._single else a

    @cached_property
    def _pre2d(self) -> np.ndarray:
        return self._pre(self.energy)

    @cached_property
    def _poly2d(self) -> np.ndarray:
        return self._post(self.energy)

    @property
    def pre_edge_line(self) -> np.ndarray:
        """The pre-edge line (in units of μ), same shape as mu."""
        return self._shape(self._pre2d)

    @property
    def post_edge_curve(self) -> np.ndarray:
        """Pre-edge line + post-edge polynomial (in units of μ), same shape as mu."""
        return self._shape(self._pre2d + self._poly2d)

    @cached_property
    def flat(self) -> np.ndarray:
        """Normalised μ with the post-edge curvature removed above E0 (Athena's "flattened")."""
        norm2d = self.norm[None, :] if self._single else self.norm
        step = np.atleast_1d(self.edge_step)[:, None]
        resid = self._poly2d / step
        at_e0 = np.take_along_axis(resid, self._ie0[:, None], axis=1)
        above = np.arange(self.energy.size)[None, :] >= self._ie0[:, None]
        flat = np.where(above, norm2d - resid + at_e0, norm2d)
        return self._shape(flat)


def _index_of(grid: np.ndarray, value, xp=np):
    """Index of the grid point at or below each value (0 below the grid)."""
    return xp.maximum(xp.searchsorted(grid, value, side="right") - 1, 0)


def _index_nearest(grid: np.ndarray, value, xp=np):
    """Index of the grid point nearest each value (the lower one on ties)."""
    j = xp.minimum(xp.maximum(xp.searchsorted(grid, value, side="left"), 1), grid.size - 1)
    lower_closer = (value - grid[j - 1]) <= (grid[j] - value)
    return xp.where(lower_closer, j - 1, j)


def _powers(u: np.ndarray, k: int) -> np.ndarray:
    """u**0 .. u**k, shape (k + 1, len(u)), by repeated products (np.power with an exponent array calls
    pow() per element: ~5x slower for the few-hundred-point fits here)."""
    out = np.empty((k + 1, u.size))
    out[0] = 1.0
    for p in range(1, k + 1):
        np.multiply(out[p - 1], u, out=out[p])
    return out


@lru_cache(maxsize=512)
def _projector(x_bytes: bytes, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Least-squares operators of a polynomial of order k on the fit energies ``x`` (L,) given as bytes (the
    cache key): basis (k + 1, L) in u = (x - centre) / scale, the inverse Gram matrix, the projector (L, k + 1)
    from data to coefficients, and centre and scale (eV). A stack's spectra fit over a few dozen index ranges
    of one grid, the same in every chunk or image tile, so they are kept between calls (read-only)."""
    x = np.frombuffer(x_bytes, dtype=np.float64)
    centre = 0.5 * (float(x[0]) + float(x[-1]))
    scale = max(0.5 * (float(x[-1]) - float(x[0])), 1e-6)
    basis = _powers((x - centre) / scale, k)  # (k + 1, L), u in [-1, 1]: well conditioned
    gram_inv = np.linalg.inv(basis @ basis.T)
    proj = (gram_inv @ basis).T
    for a in (basis, gram_inv, proj):
        a.setflags(write=False)
    return basis, gram_inv, proj, centre, scale


def _fit_block(
    block: np.ndarray, x: np.ndarray, k: int, want_rss: bool, lev_x, line: tuple | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Least-squares polynomials of order k through the rows of ``block`` (r, L) at energies x (L,), in
    u = (x - centre) / scale. Returns coefficients (r, k + 1), the residual sums of squares (r,) if asked,
    and the leverage at energies ``lev_x`` (r,) unless it is None.

    ``line`` = (alpha, beta), arrays (r,): fit ``block - (alpha + beta x)`` instead. The fit is linear, so
    that is the fit of the block minus alpha times the fit of ones minus beta times the fit of x, without
    forming the difference (the post-edge fit of μ - pre-edge line); no residuals then."""
    basis, gram_inv, proj, centre, scale = _projector(x.tobytes(), k)
    c = block @ proj  # (r, k + 1)
    rss = leverage = None
    if line is not None:
        alpha, beta = line
        c -= alpha[:, None] * proj.sum(axis=0)[None, :]
        c -= beta[:, None] * (x @ proj)[None, :]
    elif want_rss:
        resid = block - c @ basis
        rss = (resid * resid).sum(axis=1)
    if lev_x is not None:
        b0 = _powers((lev_x - centre) / scale, k).T
        leverage = ((b0 @ gram_inv) * b0).sum(axis=1)
    return c, rss, leverage


def _clip_range(start, stop, order, n: int, max_order: int, xp=np):
    """Index range [start, stop) inside the grid with at least one point; order at most points - 1."""
    start = xp.minimum(xp.maximum(start, 0), n - 1)
    stop = xp.minimum(xp.maximum(stop, start + 1), n)
    order = xp.minimum(xp.maximum(xp.minimum(order, stop - start - 1), 0), max_order)
    return start, stop, order


def _range_polyfit(
    y: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    order: np.ndarray,
    energy: np.ndarray,
    max_order: int,
    *,
    subtract: tuple[np.ndarray, np.ndarray] | None = None,
    want_rss: bool = False,
    leverage_at: np.ndarray | None = None,
) -> tuple[LocalPoly, np.ndarray | None, np.ndarray | None]:
    """Least-squares polynomial per row of y (m, n) over index ranges [start, stop), in local coordinates.

    Rows with fewer points than coefficients get a lower order; orders above a row's ``order`` are zero.
    ``subtract`` = (alpha, beta), arrays (m,): the line alpha + beta E is removed from y before fitting. The
    grid is shared, so rows with the same (start, stop, order) share one projection matrix: each distinct
    range is solved once and applied to its rows with one matrix product.
    Returns (polynomials, residual sum of squares or None, leverage or None): the leverage of row i at
    energy ``leverage_at[i]`` is var(fit value there) / var(one point), for error propagation.
    """
    m, n = y.shape
    start, stop, order = _clip_range(start, stop, order, n, max_order)
    coefs = np.zeros((m, max_order + 1))
    centre = 0.5 * (energy[start] + energy[stop - 1])
    scale = np.maximum(0.5 * (energy[stop - 1] - energy[start]), 1e-6)
    rss = np.zeros(m) if want_rss else None
    leverage = np.zeros(m) if leverage_at is not None else None
    key = (start.astype(np.int64) * (n + 1) + stop) * (max_order + 1) + order
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    by_group = np.argsort(group.ravel(), kind="stable")
    bounds = np.searchsorted(group.ravel()[by_group], np.arange(first.size + 1))
    for g, j in enumerate(first):
        rows = by_group[bounds[g] : bounds[g + 1]]
        a, b, k = int(start[j]), int(stop[j]), int(order[j])
        block = y[rows, a:b]
        line = None if subtract is None else (subtract[0][rows], subtract[1][rows])
        lev_x = None if leverage is None else leverage_at[rows]
        c, rss_g, lev_g = _fit_block(block, energy[a:b], k, want_rss and line is None, lev_x, line)
        coefs[rows, : k + 1] = c
        if want_rss:
            rss[rows] = rss_g
        if leverage is not None:
            leverage[rows] = lev_g
    return LocalPoly(coefs, centre, scale), rss, leverage


def _default_ranges(
    energy: np.ndarray, e0, ie0, pre1, pre2, norm1, norm2, nnorm, xp=np
) -> dict[str, np.ndarray]:
    """Per-spectrum fit ranges (eV relative to E0) and orders, with Larch's defaults and clamps.

    ``e0``, ``ie0``: arrays (n_spectra,) with ``xp=np``, or a float and an int with ``xp=SCALAR``.
    """
    emin, emax = float(energy[0]), float(energy[-1])
    shape = getattr(e0, "shape", ())
    if pre1 is None:
        de = float(energy[1]) - e0
        p1 = xp.where(ie0 > 20, 5.0 * xp.round(de / 5.0), 2.0 * xp.round(de / 2.0))
    else:
        p1 = xp.full(shape, float(pre1))
    p1 = xp.maximum(p1, emin - e0)
    p2 = 0.5 * p1 if pre2 is None else xp.full(shape, float(pre2))
    p1, p2 = xp.minimum(p1, p2), xp.maximum(p1, p2)

    if norm2 is None:
        n2 = 5.0 * xp.round((emax - e0) / 5.0)
    else:
        n2 = xp.full(shape, float(norm2))
        n2 = xp.where(n2 < 0, emax - e0 - n2, n2)
    n2 = xp.minimum(n2, emax - e0)
    n1 = xp.minimum(25.0, 5.0 * xp.round(n2 / 15.0)) if norm1 is None else xp.full(shape, float(norm1))
    n1, n2 = xp.minimum(n1, n2), xp.maximum(n1, n2)
    n1 = xp.minimum(n1, n2 - 2.0)
    if nnorm is None:
        span = n2 - n1
        order = xp.where(span < 30, 0, xp.where(span < 300, 1, 2))
    else:
        order = xp.full(shape, int(nnorm))
    order = xp.minimum(xp.maximum(order, 0), MAX_NNORM)
    return {"pre1": p1, "pre2": p2, "norm1": n1, "norm2": n2, "nnorm": order}


def _fit_ranges(energy: np.ndarray, e0, ie0, ranges_kw: dict, npre: int, xp=np) -> tuple:
    """Fit ranges in eV (dict, with npre per spectrum) and as grid indices: pre-edge [a, b) with order
    npre, post-edge [c, d) with its order. Arrays (n_spectra,) with ``xp=np``; numbers with ``xp=SCALAR``."""
    n = energy.size
    r = _default_ranges(energy, e0, ie0, xp=xp, **ranges_kw)
    ipre1 = _index_of(energy, r["pre1"] + e0, xp)
    ipre2 = _index_of(energy, r["pre2"] + e0, xp)
    npre_row = xp.where(ipre2 - ipre1 < 3, 0, npre)
    a = ipre1
    b = _index_nearest(energy, r["pre2"] + e0, xp)
    b = xp.where((npre_row == 0) & (b == a), b + 1, b)
    b = xp.where((npre_row == 1) & (b - a < 2), xp.minimum(n, a + 2), b)
    c = _index_of(energy, r["norm1"] + e0, xp)
    d = _index_nearest(energy, r["norm2"] + e0, xp)
    c = xp.minimum(c, n - 3)
    order = r["nnorm"]
    short = d - c < 2
    c = xp.where(short, c - 2, c)
    order = xp.where(short, 0, xp.where(d - c < 5, xp.minimum(1, order), order))
    r["npre"] = npre_row
    return r, (a, b, npre_row), (c, d, order)


def _normalize_chunk(
    energy: np.ndarray,
    mu: np.ndarray,
    e0: np.ndarray,
    step_given: np.ndarray | None,
    ranges_kw: dict,
    npre: int,
    out: np.ndarray | None = None,
) -> dict[str, object]:
    """Kernel: normalise clean rows ``mu`` (m, n) with known E0 (m,), eV (``norm`` written to ``out``, an
    array like ``mu``, when given)."""
    ie0 = _index_nearest(energy, e0)
    r, (a, b, npre_row), (c, d, order) = _fit_ranges(energy, e0, ie0, ranges_kw, npre)
    pre, pre_rss, pre_lev = _range_polyfit(
        mu, a, b, npre_row, energy, 1, want_rss=True, leverage_at=energy[ie0]
    )
    dof = np.maximum(b - a, 0) - (npre_row + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = np.where(dof >= 2, np.sqrt(pre_rss / dof), np.nan)
    # the pre-edge line as alpha + beta * E
    beta = pre.coefs[:, 1] / pre.scale
    alpha = pre.coefs[:, 0] - beta * pre.centre
    post, _, post_lev = _range_polyfit(
        mu, c, d, order, energy, MAX_NNORM, subtract=(alpha, beta), leverage_at=energy[ie0]
    )
    step = post.at(energy[ie0]) if step_given is None else step_given
    # norm = (mu - pre-edge line) / step: four array passes without temporaries, into ``out`` when given
    norm = np.multiply(beta[:, None], energy[None, :], out=out)
    norm += alpha[:, None]
    np.subtract(mu, norm, out=norm)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm *= (1.0 / step)[:, None]
    # standard error of the step from the per-point noise, both fits extrapolated to E0 (the post-edge
    # residual also holds XAFS structure, so the pre-edge noise is taken as the measurement noise)
    step_err = noise * np.sqrt(pre_lev + post_lev)
    return {
        "pre": pre,
        "post": post,
        "step": step,
        "norm": norm,
        "ie0": ie0,
        "ranges": r,
        "noise": noise,
        "step_err": step_err,
    }


def _normalize_one(
    energy: np.ndarray, mu: np.ndarray, e0: float, step_given: float | None, ranges_kw: dict, npre: int
) -> dict[str, object]:
    """:func:`_normalize_chunk` for one spectrum ``mu`` (n,): the same rules and fits on Python numbers,
    without the grouping and per-row bookkeeping that a stack needs (a large part of the single-spectrum
    time). Same outputs, as arrays of shape (1, ...)."""
    n = energy.size
    ie0 = int(_index_nearest(energy, e0, SCALAR))
    r, (a, b, npre_row), (c, d, order) = _fit_ranges(energy, e0, ie0, ranges_kw, npre, SCALAR)
    e_at = energy[ie0 : ie0 + 1]

    def fit(y: np.ndarray, a: int, b: int, k: int, max_order: int):
        """Polynomial through y[a:b] by QR (LAPACK, as AUTOBK uses: one routine fewer to load than the
        normal equations of _fit_block): LocalPoly, residual sum of squares (1,), leverage at E0 (1,)."""
        a, b, k = _clip_range(a, b, k, n, max_order, SCALAR)
        centre = 0.5 * (float(energy[a]) + float(energy[b - 1]))
        scale = max(0.5 * (float(energy[b - 1]) - float(energy[a])), 1e-6)
        cols = np.empty((k + 2, b - a))
        cols[: k + 1] = _powers((energy[a:b] - centre) / scale, k)
        cols[k + 1] = y[a:b]
        qr = dgeqrf(cols.T)[0]  # R of the basis, Qᵀy, and |residual| in the next diagonal element
        r = qr[: k + 1, : k + 1]
        full = np.zeros((1, max_order + 1))
        full[0, : k + 1] = dtrtrs(r, qr[: k + 1, k + 1])[0]
        rss = float(qr[k + 1, k + 1]) ** 2 if b - a > k + 1 else 0.0
        at_e0 = dtrtrs(r, _powers((e_at - centre) / scale, k)[:, 0], trans=1)[0]
        return LocalPoly(full, np.array([centre]), np.array([scale])), rss, float(at_e0 @ at_e0)

    pre, pre_rss, pre_lev = fit(mu, a, b, npre_row, 1)
    beta = float(pre.coefs[0, 1] / pre.scale[0])
    alpha = float(pre.coefs[0, 0]) - beta * float(pre.centre[0])
    line = alpha + beta * energy
    dof = max(b - a, 0) - (npre_row + 1)
    noise = math.sqrt(pre_rss / dof) if dof >= 2 else math.nan
    post, _, post_lev = fit(mu - line, c, d, order, MAX_NNORM)
    step = post.at(e_at) if step_given is None else np.array([step_given])
    norm = (mu - line) * (1.0 / float(step[0]) if step[0] != 0 else math.nan)  # a step <= 0 is refused
    return {
        "pre": pre,
        "post": post,
        "step": step,
        "norm": norm[None, :],
        "ie0": np.array([ie0]),
        "ranges": {k: np.array([v]) for k, v in r.items()},
        "noise": np.array([noise]),
        "step_err": np.array([noise * math.sqrt(pre_lev + post_lev)]),
    }


_NO_EDGE = "no edge found: no point of high dμ/dE with high neighbours"


def _bad_step_message(step: float, e0: float) -> str:
    if not np.isfinite(step):
        return "no edge: edge step is not finite"
    return (
        f"no edge: edge step {step:.4g} at E0 = {e0:.2f} eV is not positive"
        " (μ does not rise across E0: wrong E0, or I0 and It swapped?)"
    )


def _weak_step_message(step: float, err: float, noise: float, min_edge_snr: float) -> str:
    return (
        f"no edge: edge step {step:.3g} is within {min_edge_snr:g} standard errors "
        f"({err:.2g}, from the pre-edge noise {noise:.2g}) of zero"
    )


def _outside_message(e0, e: np.ndarray) -> str:
    return f"e0: {e0:.2f} eV is outside the data ({e[1]:.2f} .. {e[-2]:.2f} eV)"


def _given_step_message(step) -> str:
    return f"edge_step: must be > 0, got {step!r}"


def _pre_edge_one(
    e: np.ndarray,
    mu: np.ndarray,
    e0_in: float | None,
    step_in: float | None,
    ranges_kw: dict,
    npre: int,
    smooth_ev: float | None,
    min_edge_snr: float,
) -> PreEdgeResult:
    """:func:`pre_edge` of one spectrum ``mu`` (n,) after the input checks: the same steps without the
    chunking and per-row bookkeeping of a stack (which cost more than the work itself for one spectrum).
    Failures raise InputError."""
    if e0_in is None:
        found = search_e0(e, mu[None, :], smooth_ev=smooth_ev)
        if not found.found[0]:
            raise InputError(_NO_EDGE)
        e0 = float(found.e0[0])
    else:
        e0 = e0_in
    out = _normalize_one(e, mu, e0, step_in, ranges_kw, npre)
    step, noise, step_err = float(out["step"][0]), float(out["noise"][0]), float(out["step_err"][0])
    if not (np.isfinite(step) and step > 0):
        raise InputError(_bad_step_message(step, e0))
    if step_in is None and np.isfinite(step_err) and step < min_edge_snr * step_err:
        raise InputError(_weak_step_message(step, step_err, noise, min_edge_snr))
    params = {k: int(v[0]) if k in ("nnorm", "npre") else float(v[0]) for k, v in out["ranges"].items()}
    params.update(e0_given=e0_in is not None, min_edge_snr=float(min_edge_snr), smooth_ev=smooth_ev)
    return PreEdgeResult(
        energy=e,
        e0=e0,
        edge_step=step,
        norm=out["norm"][0],
        ok=np.ones(1, dtype=bool),
        errors={},
        params_used=params,
        noise=noise,
        edge_step_err=step_err,
        _pre=out["pre"],
        _post=out["post"],
        _ie0=out["ie0"],
        _single=True,
    )


def pre_edge(
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    e0: float | np.ndarray | None = None,
    edge_step: float | np.ndarray | None = None,
    pre1: float | None = None,
    pre2: float | None = None,
    norm1: float | None = None,
    norm2: float | None = None,
    nnorm: int | None = None,
    npre: int = 1,
    smooth_ev: float | None = None,
    min_edge_snr: float = 3.0,
) -> PreEdgeResult:
    """Pre-edge subtraction and normalisation of one spectrum or a stack of spectra on one energy grid.

    Parameters
    ----------
    energy : ndarray of shape (n,), in eV, strictly increasing
    mu : ndarray of shape (n,) or (n_spectra, n); processed as float64 (other dtypes are copied)
    e0 : edge energy in eV (scalar or (n_spectra,)); default: :func:`find_e0` per spectrum
    edge_step : fixed edge step (scalar or (n_spectra,)); default: from the fits
    pre1, pre2 : pre-edge fit range, eV relative to E0; default pre1 = (second point - E0) rounded to 5 eV
        (2 eV when E0 is within 20 points of the start), pre2 = pre1 / 2
    norm1, norm2 : post-edge fit range, eV relative to E0; default norm2 = end of data (rounded to 5 eV),
        norm1 = min(25, norm2 / 15 rounded to 5 eV); a negative norm2 counts back from the end of the data
    nnorm : post-edge polynomial order (0..5); default 2 if norm2 - norm1 ≥ 300 eV, 1 if ≥ 30 eV, else 0
    npre : 1 for a pre-edge line, 0 for a constant (a constant is used anyway with fewer than 3 points)
    smooth_ev : Lorentzian half-width (eV) of the derivative used for E0 (default: Larch's rule)
    min_edge_snr : a spectrum whose edge step is below this many standard errors (propagated from the
        pre-edge noise through both fits) has "no edge"; 0 disables the test (e.g. for L edges, whose
        continuum step is small next to the white lines)

    Returns
    -------
    PreEdgeResult. For one spectrum (1-D mu) any failure raises InputError; for a stack, failed spectra
    get ``ok`` False, a message in ``errors`` and NaN in their rows, and the others are unaffected.
    Failures: NaN/inf in μ, no edge found, E0 outside the data, edge step ≤ 0 or not significant.
    """
    e = check_energy(energy)
    mu2, single = check_stack(mu, e.size)
    m = mu2.shape[0]
    e0_in = per_spectrum(e0, m, name="e0")
    step_in = per_spectrum(edge_step, m, name="edge_step")
    for name, val in (("pre1", pre1), ("pre2", pre2), ("norm1", norm1), ("norm2", norm2)):
        if val is not None and not np.isfinite(val):
            raise InputError(f"{name}: must be a finite number of eV relative to E0, got {val!r}")
    if nnorm is not None and not (0 <= int(nnorm) <= MAX_NNORM):
        raise InputError(f"nnorm: post-edge polynomial order must be 0..{MAX_NNORM}, got {nnorm!r}")
    if npre not in (0, 1):
        raise InputError(f"npre: must be 0 (constant) or 1 (line), got {npre!r}")
    if smooth_ev is not None and not (np.isfinite(smooth_ev) and smooth_ev > 0):
        raise InputError(f"smooth_ev: must be a positive number of eV, got {smooth_ev!r}")
    if not (np.isfinite(min_edge_snr) and min_edge_snr >= 0):
        raise InputError(f"min_edge_snr: must be a number >= 0 (0 disables the test), got {min_edge_snr!r}")

    ranges_kw = {"pre1": pre1, "pre2": pre2, "norm1": norm1, "norm2": norm2, "nnorm": nnorm}
    if single and np.isfinite(mu2).all():
        e0_one = None if e0_in is None else float(e0_in[0])
        if e0_one is not None and not (e[1] <= e0_one <= e[-2]):  # also false for NaN
            raise InputError(_outside_message(e0_in[0], e))
        step_one = None if step_in is None else float(step_in[0])
        if step_one is not None and not (math.isfinite(step_one) and step_one > 0):
            raise InputError(_given_step_message(step_in[0]))
        return _pre_edge_one(e, mu2[0], e0_one, step_one, ranges_kw, npre, smooth_ev, min_edge_snr)
    status = SpectrumErrors(m)
    check_finite_rows(mu2, e, status)
    if e0_in is not None:
        outside = ~np.isfinite(e0_in) | (e0_in < e[1]) | (e0_in > e[-2])
        status.fail_each(outside, lambda i: _outside_message(e0_in[i], e))
    if step_in is not None:
        status.fail_each(~(np.isfinite(step_in) & (step_in > 0)), lambda i: _given_step_message(step_in[i]))
    status.raise_if_single(single)
    e0_out = np.full(m, np.nan)
    step_out = np.full(m, np.nan)
    noise_out = np.full(m, np.nan)
    step_err = np.full(m, np.nan)
    norm = np.empty(mu2.shape)  # rows of failed spectra are set to NaN below
    pre = LocalPoly(np.full((m, 2), np.nan), np.zeros(m), np.ones(m))
    post = LocalPoly(np.full((m, MAX_NNORM + 1), np.nan), np.zeros(m), np.ones(m))
    ie0_out = np.zeros(m, dtype=np.intp)
    used = {k: np.full(m, np.nan) for k in ("pre1", "pre2", "norm1", "norm2", "nnorm", "npre")}
    smoothers: dict = {}
    for lo in range(0, m, _CHUNK):
        hi = min(m, lo + _CHUNK)
        good = status.ok[lo:hi]
        rows = slice(lo, hi) if good.all() else lo + np.flatnonzero(good)
        block = mu2[rows]
        if block.shape[0] == 0:
            continue
        if e0_in is None:
            found = search_e0(e, block, smooth_ev=smooth_ev, cache=smoothers)
            e0_rows = found.e0
            row_ids = np.arange(lo, hi) if isinstance(rows, slice) else rows
            status.fail(row_ids[~found.found], _NO_EDGE)
        else:
            e0_rows = e0_in[rows]
        contiguous = isinstance(rows, slice)
        out = _normalize_chunk(e, block, e0_rows, None if step_in is None else step_in[rows], ranges_kw, npre,
                               out=norm[rows] if contiguous else None)
        e0_out[rows] = e0_rows
        step_out[rows] = out["step"]
        noise_out[rows] = out["noise"]
        step_err[rows] = out["step_err"]
        if not contiguous:
            norm[rows] = out["norm"]
        ie0_out[rows] = out["ie0"]
        for target, part in ((pre, out["pre"]), (post, out["post"])):
            target.coefs[rows, : part.coefs.shape[1]] = part.coefs
            target.centre[rows] = part.centre
            target.scale[rows] = part.scale
        for k, values in used.items():
            values[rows] = out["ranges"][k]

    checked = status.ok.copy()
    step_bad = checked & ~(np.isfinite(step_out) & (step_out > 0))
    status.fail_each(step_bad, lambda i: _bad_step_message(step_out[i], e0_out[i]))
    if step_in is None:
        weak = status.ok & np.isfinite(step_err) & (step_out < min_edge_snr * step_err)
        status.fail_each(
            weak, lambda i: _weak_step_message(step_out[i], step_err[i], noise_out[i], min_edge_snr)
        )
    failed = ~status.ok
    if failed.any():
        for arr in (e0_out, step_out, noise_out, step_err):
            arr[failed] = np.nan
        norm[failed] = np.nan
        pre.coefs[failed] = np.nan
        post.coefs[failed] = np.nan
    status.raise_if_single(single)

    def scalar_or(a: np.ndarray):
        return float(a[0]) if single else a

    params = {
        k: (int(v[0]) if k in ("nnorm", "npre") else float(v[0])) if single else v for k, v in used.items()
    }
    params.update(e0_given=e0 is not None, min_edge_snr=float(min_edge_snr), smooth_ev=smooth_ev)
    return PreEdgeResult(
        energy=e,
        e0=scalar_or(e0_out),
        edge_step=scalar_or(step_out),
        norm=norm[0] if single else norm,
        ok=status.ok,
        errors=dict(status.messages),
        params_used=params,
        noise=scalar_or(noise_out),
        edge_step_err=scalar_or(step_err),
        _pre=pre,
        _post=post,
        _ie0=ie0_out,
        _single=single,
    )
