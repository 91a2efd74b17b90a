"""Gaussian Markov random field smoothing of a continuous feature map, with learned hyperparameters.

Model (one map, pixels i on a grid, 4-neighbour graph G):

    y_i = x_i + e_i,  e_i ~ N(0, s2)                            (observed pixels only)
    p(x) ∝ exp(-alpha/2 * sum_{i~j in G} (x_i - x_j)^2 - h/2 * sum_i (x_i - m_i)^2)

The MAP (= posterior mean) solves the sparse system ``(W + lam L_G + eta I) x = W y + eta m`` with
``lam = alpha s2`` (a squared smoothing length in pixels) and ``eta = h s2``; it is solved by conjugate
gradients, warm-started, so that a tile and a halo can be re-solved alone. The preconditioner is the exact
inverse of the uncut, fully observed problem on the same rectangle, applied with two DCTs (the free-boundary
Laplacian is diagonal in the DCT-II basis; a window held by the field outside uses the DST-I, see
:class:`_DctPreconditioner`; on rectangles up to ``MATRIX_TRANSFORM_MAX_SIDE`` px the same transforms are
applied as products with their matrices, which is faster there): on a 128 x 128 map with cuts it needs
several times fewer CG iterations than a Jacobi preconditioner (see docs/measurements.md). The CG is our
own (:func:`_pcg`), vectorised over several maps on one rectangle (:func:`solve_maps`), with a stop rule in
map units for window solves (:class:`StopRule`).
The mesostructure prior of METHODS §3 ("smooth within a domain, jump between domains") is obtained by
dropping the edges of G between pixels of different phase labels (``labels=``); ``m`` is then the label mean.

Hyperparameters (s2, lam, eta) maximise a marginal likelihood: on each complete b x b block of the map the
orthonormal 2-D DCT-II diagonalises the free-boundary grid Laplacian (eigenvalues 4 sin^2(pi k / 2b) +
4 sin^2(pi l / 2b)), so the block's likelihood is exact and costs O(b^2 log b). The constant mode is left out
(restricted likelihood: the block mean is a nuisance), and blocks are treated as independent (a block
composite likelihood). Its sufficient statistic is the summed DCT power per block shape, which is a sum over
blocks: it can be accumulated tile by tile, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy.fft import dct, dctn, dst, dstn, idct, idctn

from ..errors import InputError

LAM_BOUNDS = (1e-3, 1e5)  # squared smoothing length, px^2
# a side of a window counts as held by the field outside when this fraction of its valid pixels has an edge out
HELD_FRACTION = 0.25
ETA_BOUNDS = (1e-8, 1e3)


# --------------------------------------------------------------------------------------------- graph


def grid_edges(valid: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Active edges of the 4-neighbour graph: both ends valid (and the same label, if labels are given).

    Returns ``(horizontal, vertical)`` bool arrays of shapes (ny, nx-1) and (ny-1, nx).
    """
    h = valid[:, 1:] & valid[:, :-1]
    v = valid[1:, :] & valid[:-1, :]
    if labels is not None:
        h = h & (labels[:, 1:] == labels[:, :-1])
        v = v & (labels[1:, :] == labels[:-1, :])
    return h, v


# --------------------------------------------------------------------------------------------- solve


@dataclass
class GmrfParams:
    """Learned GMRF hyperparameters of one map.

    Attributes
    ----------
    s2 : noise variance (map units squared)
    lam : alpha * s2, squared smoothing length (px^2); ``sqrt(lam)`` is the smoothing length in pixels
    eta : h * s2, shrinkage towards the prior mean relative to the data
    n_blocks : blocks the likelihood was computed on
    nll : minimised negative log marginal likelihood per mode
    """

    s2: float
    lam: float
    eta: float
    n_blocks: int = 0
    nll: float = float("nan")

    @property
    def alpha(self) -> float:
        return self.lam / self.s2

    @property
    def h(self) -> float:
        return self.eta / self.s2

    @property
    def smoothing_length_px(self) -> float:
        return float(np.sqrt(self.lam))

    def as_array(self) -> np.ndarray:
        return np.array([self.s2, self.lam, self.eta, self.n_blocks, self.nll])

    @classmethod
    def from_array(cls, a: np.ndarray) -> GmrfParams:
        return cls(float(a[0]), float(a[1]), float(a[2]), int(a[3]), float(a[4]))


@dataclass
class StopRule:
    """When the conjugate-gradient solve of a map stops (at the first rule met; None: not used).

    ``rtol``: the residual norm is below ``rtol`` times the norm of the right-hand side, both of the map's
    deviation from its mean level (the rule of scipy's ``cg``). ``field_tol`` (map units): the preconditioned
    residual, an estimate of the remaining error of the field, is below ``field_tol`` at every pixel; it
    means the same on every map, whatever its values and size (window solves use it alone).
    """

    rtol: float | None = 1e-6
    field_tol: float | None = None


def solve_maps(
    y: np.ndarray,
    valid: np.ndarray,
    params: list[GmrfParams],
    *,
    labels: np.ndarray | None = None,
    cut: np.ndarray | None = None,
    mean: np.ndarray | None = None,
    x0: np.ndarray | None = None,
    boundary: np.ndarray | None = None,
    boundary_edges: np.ndarray | None = None,
    stop: list[StopRule] | None = None,
    maxiter: int = 2000,
    preconditioner: str = "dct",
    kinds: tuple[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means of K GMRF maps on the same rectangle, solved together (vectorised over the maps).

    Parameters
    ----------
    y : ndarray of shape (K, ny, nx), the per-pixel maps (values at invalid pixels are ignored)
    valid : ndarray of shape (K, ny, nx) bool
    params : K hyperparameter sets
    labels : ndarray of shape (ny, nx) int, phase labels; edges between different labels are cut in the maps
        with ``cut[k]`` True (default: all maps, when labels are given)
    mean : ndarray of shape (K, ny, nx) or None, prior means (default: the mean of each map's valid pixels)
    x0 : ndarray of shape (K, ny, nx), warm start (NaN entries start from the data)
    boundary, boundary_edges : ndarrays of shape (K, ny, nx), see :func:`solve_map` and :func:`window_terms`
    stop : one :class:`StopRule` per map (default: rtol 1e-6)
    preconditioner : "dct" or "jacobi"
    kinds : transform per axis of the "dct" preconditioner, "N" (free edges) or "D" (held edges); default from
        ``boundary_edges`` (see :func:`side_kinds`)

    Returns
    -------
    x : ndarray of shape (K, ny, nx), NaN at invalid pixels
    n_iter : ndarray of shape (K,) int, CG iterations of each map

    Each map has its own preconditioned conjugate-gradient iteration; they run in lockstep so that each
    step is a few array operations on the (K, ny, nx) stack (and one batched DCT pair) instead of K separate
    solver calls; a map leaves the stack when it has converged. The Polak-Ribiere (flexible) form of beta is
    used because the DCT preconditioner of window solves runs in float32 (see :class:`_DctPreconditioner`).
    """
    y = np.asarray(y, dtype=np.float64)
    valid = np.asarray(valid, bool)
    k_maps, ny, nx = y.shape
    lam = np.array([p.lam for p in params], dtype=np.float64)[:, None, None]
    eta = np.array([p.eta for p in params], dtype=np.float64)[:, None, None]
    stop = stop or [StopRule()] * k_maps
    # active edges in the flattened (K, ny * nx) layout: pixel i to i + 1 (same row) and i to i + nx, both
    # ends valid (and, in cut maps, the same label); as weights lam, zero on the last column / row
    w_right = np.zeros((k_maps, ny, nx))
    w_down = np.zeros((k_maps, ny, nx))
    np.logical_and(valid[:, :, 1:], valid[:, :, :-1], out=w_right[:, :, :-1], casting="unsafe")
    np.logical_and(valid[:, 1:, :], valid[:, :-1, :], out=w_down[:, :-1, :], casting="unsafe")
    if labels is not None:
        cut = np.ones(k_maps, bool) if cut is None else np.asarray(cut, bool)
        if cut.any():
            w_right[cut, :, :-1] *= labels[:, 1:] == labels[:, :-1]
            w_down[cut, :-1, :] *= labels[1:, :] == labels[:-1, :]
    w_right *= lam
    w_down *= lam
    lam_deg = w_right + w_down  # lam x number of active edges, per pixel
    lam_deg[:, :, 1:] += w_right[:, :, :-1]
    lam_deg[:, 1:, :] += w_down[:, :-1, :]
    if boundary_edges is not None:  # counted only at valid pixels (see window_terms)
        lam_deg += lam * boundary_edges
    vf = valid.astype(np.float64)
    yv = np.where(valid, y, 0.0)
    rhs = yv
    if np.any(eta > 0):
        if mean is None:
            counts = np.maximum(valid.sum(axis=(1, 2)), 1)
            mean = (yv.sum(axis=(1, 2)) / counts)[:, None, None]
        rhs = rhs + eta * mean * vf
    if boundary is not None:
        rhs = rhs + lam * boundary  # 0 at invalid pixels
    diag = lam_deg
    diag += 1.0 + eta * vf  # 1 at invalid pixels (no edges there)
    if x0 is None:
        x = yv.copy()
    else:
        x = np.where(valid & np.isfinite(x0), x0, yv)
    flat = (k_maps, ny * nx)
    # Solves that stop at a field tolerance (far above float32 rounding of the deviations from the mean
    # level) run in float32: half the memory traffic per CG step (see _DctPreconditioner)
    dtype = np.float32 if all(s.field_tol is not None for s in stop) else np.float64
    if preconditioner == "dct":
        precond = _DctPreconditioner(vf.reshape(flat).astype(dtype), lam, eta, (ny, nx), dtype,
                                     kinds=kinds or side_kinds(valid, boundary_edges))
    elif preconditioner == "jacobi":
        precond = _Jacobi(diag.reshape(flat).astype(dtype))
    else:
        raise InputError(f"preconditioner must be 'dct' or 'jacobi', got {preconditioner!r}")
    rtol = np.array([-1.0 if s.rtol is None else s.rtol for s in stop])  # -1: never
    ftol = np.array([-1.0 if s.field_tol is None else s.field_tol for s in stop])
    a_op = _Laplacian(diag.reshape(flat), w_right.reshape(flat), w_down.reshape(flat), nx)
    a_run = a_op if dtype is np.float64 else _Laplacian(*(w.reshape(flat).astype(dtype) for w in (diag, w_right, w_down)), nx)
    # Solve for the deviation from each map's mean level c (A (x - c) = b - A c): the relative tolerance is
    # then relative to the map's variation, not to its offset (an edge energy of 7120 eV with 0.3 eV noise
    # was "converged" at 1e-6 of its right-hand side while still 0.02 noise sd from the solution).
    counts = np.maximum(valid.sum(axis=(1, 2)), 1)
    level = yv.sum(axis=(1, 2)) / counts
    level_field = (vf * level[:, None, None]).reshape(flat)
    # the right-hand side is 0 at invalid pixels (there A is the identity), so the residual stays 0 there
    # (see _DctPreconditioner)
    b = (rhs.reshape(flat) - a_op(level_field)) * vf.reshape(flat)
    x, iters = _pcg(a_run, precond, b.astype(dtype, copy=False),
                    (x.reshape(flat) - level_field).astype(dtype, copy=False), rtol, ftol, maxiter)
    x = x + level_field
    x = x.reshape(k_maps, ny, nx)
    x[~valid] = np.nan
    return x, iters


class _Laplacian:
    """A v = diag v - sum over active edges of lam v_neighbour, for a stack of K maps flattened to (K, ny nx).

    In the flattened layout a pixel's right and lower neighbours are at +1 and +nx: each product is one
    contiguous slice per map (4x faster than the strided 2-D slices for 128 x 128 px, see
    docs/measurements.md).
    Weights are zero on the last column / row, so nothing wraps around.
    """

    def __init__(self, diag: np.ndarray, w_right: np.ndarray, w_down: np.ndarray, nx: int) -> None:
        self.diag, self.w_right, self.w_down, self.nx = diag, w_right, w_down, nx
        self._wr, self._wd = w_right[:, :-1], w_down[:, :-nx]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        nx = self.nx
        out = self.diag * v
        out[:, :-1] -= self._wr * v[:, 1:]
        out[:, 1:] -= self._wr * v[:, :-1]
        out[:, :-nx] -= self._wd * v[:, nx:]
        out[:, nx:] -= self._wd * v[:, :-nx]
        return out

    def keep(self, sel: np.ndarray) -> _Laplacian:
        return _Laplacian(self.diag[sel], self.w_right[sel], self.w_down[sel], self.nx)


class _Jacobi:
    def __init__(self, diag: np.ndarray) -> None:
        self.inv = 1.0 / diag

    def __call__(self, r: np.ndarray) -> np.ndarray:
        return r * self.inv

    def keep(self, sel: np.ndarray) -> _Jacobi:
        out = _Jacobi.__new__(_Jacobi)
        out.inv = self.inv[sel]
        return out


def _axis_eigenvalues(kind: str, n: int) -> np.ndarray:
    """Eigenvalues of the 1-D grid Laplacian (n points) with both ends free ("N", DCT-II basis) or both held
    by a fixed outside neighbour ("D", DST-I basis), in the order of :func:`_axis_forward`'s coefficients."""
    if kind == "N":
        k = np.arange(n)
        return 4 * np.sin(np.pi * k / (2 * n)) ** 2
    k = np.arange(1, n + 1)
    return 4 * np.sin(np.pi * k / (2 * (n + 1))) ** 2


def _axis_forward(a: np.ndarray, kind: str, axis: int) -> np.ndarray:
    """Orthonormal transform of ``a`` along ``axis`` into the eigenbasis of :func:`_axis_eigenvalues`."""
    if kind == "N":
        return dct(a, type=2, axis=axis, norm="ortho")
    return dst(a, type=1, axis=axis, norm="ortho")


def _axis_inverse(c: np.ndarray, kind: str, axis: int) -> np.ndarray:
    """Inverse of :func:`_axis_forward` (the orthonormal DST-I is its own inverse)."""
    if kind == "N":
        return idct(c, type=2, axis=axis, norm="ortho")
    return dst(c, type=1, axis=axis, norm="ortho")


# Windows with both sides up to this (px) apply the preconditioner's transforms as products with the dense
# transform matrices (_axis_matrix) instead of scipy's fast transforms: up to 2x faster for the small float32
# window stacks of a tile update, equal at ~120 px, slower at the 512 px of whole-map solves (see
# docs/measurements.md).
MATRIX_TRANSFORM_MAX_SIDE = 128


@lru_cache(maxsize=64)
def _axis_matrix(kind: str, n: int, dtype_char: str) -> tuple[np.ndarray, np.ndarray]:
    """The transform of :func:`_axis_forward` on n points as an orthonormal (n, n) matrix T (T @ v is the
    transform of v) and its transpose (the inverse), both C-contiguous in the given dtype; read-only."""
    t = _axis_forward(np.eye(n), kind, 0)
    out = (np.ascontiguousarray(t, dtype=dtype_char), np.ascontiguousarray(t.T, dtype=dtype_char))
    for m in out:
        m.setflags(write=False)
    return out


def side_kinds(valid: np.ndarray, boundary_edges: np.ndarray | None) -> tuple[str, str]:
    """Preconditioner basis per axis of a window stack (K, ny, nx): "D" where either side of the axis is held
    (at least a quarter of its valid pixels have an edge to the fixed field outside), else "N"."""
    if boundary_edges is None:
        return "N", "N"
    held = []
    for sl in ((slice(None), 0, slice(1, -1)), (slice(None), -1, slice(1, -1)),
               (slice(None), slice(1, -1), 0), (slice(None), slice(1, -1), -1)):
        n_valid = int(valid[sl].sum())
        held.append(n_valid > 0 and int((boundary_edges[sl] > 0).sum()) >= HELD_FRACTION * n_valid)
    return ("D" if held[0] or held[1] else "N"), ("D" if held[2] or held[3] else "N")


class _DctPreconditioner:
    """The exact inverse of the uncut, fully observed problem on the rectangle, by fast transforms (see the
    module doc), for a stack of K maps in the flattened (K, ny nx) layout; invalid pixels pass through.

    Whole-map solves have free edges (DCT-II on both axes). A window solve holds the field outside fixed,
    which adds lam per outside neighbour to the diagonal; along an axis where the window is held on a side
    the transform is the DST-I, the exact basis for both ends held (``kinds``, see :func:`side_kinds`). With
    the free-edge DCT on such windows the strongly smoothed cut maps took 2-3x as many CG steps. A window
    held on one side only is treated as held on both: the exact mixed basis (a DST-I of the mirrored signal)
    gave the same step counts at twice the transform length.

    The residual is always 0 at invalid pixels (there A is the identity and the right-hand side 0, which
    :func:`solve_maps` ensures), so the input needs no mask and masking the output with the valid pixels is
    "invalid pixels pass through". In float32 (the window solves) the transforms take about half the time
    (see docs/measurements.md for these measurements and the alternatives tried).
    """

    def __init__(self, vf: np.ndarray, lam: np.ndarray, eta: np.ndarray, shape: tuple[int, int], dtype,
                 kinds: tuple[str, str] = ("N", "N")) -> None:
        if kinds == ("N", "N"):
            mu = block_eigenvalues(shape)
        else:
            mu = _axis_eigenvalues(kinds[0], shape[0])[:, None] + _axis_eigenvalues(kinds[1], shape[1])[None, :]
        self.response = (1.0 / (1.0 + eta + lam * mu)).astype(dtype)
        self.vf, self.shape, self.dtype, self.kinds = vf, shape, dtype, kinds  # vf: valid (K, ny nx) in dtype
        self.mats = None
        if max(shape) <= MATRIX_TRANSFORM_MAX_SIDE:
            self.mats = (_axis_matrix(kinds[0], shape[0], np.dtype(dtype).char),
                         _axis_matrix(kinds[1], shape[1], np.dtype(dtype).char))

    def __call__(self, r: np.ndarray) -> np.ndarray:
        k = r.shape[0]
        a = r.reshape((k,) + self.shape)  # 0 at invalid pixels (see the class doc)
        if self.mats is not None:
            # the same orthonormal transforms as matrix products: c = Ty a Tx^T, z = Ty^T (response c) Tx
            (ty, ty_t), (tx, tx_t) = self.mats
            ny, nx = self.shape
            c = np.matmul(ty, (a.reshape(k * ny, nx) @ tx_t).reshape(k, ny, nx))
            c *= self.response
            z = np.matmul(ty_t, (c.reshape(k * ny, nx) @ tx).reshape(k, ny, nx))
        elif self.kinds == ("N", "N"):
            c = dctn(a, axes=(1, 2), norm="ortho")
            c *= self.response
            z = idctn(c, axes=(1, 2), norm="ortho")
        elif self.kinds == ("D", "D"):
            c = dstn(a, type=1, axes=(1, 2), norm="ortho")
            c *= self.response
            z = dstn(c, type=1, axes=(1, 2), norm="ortho")
        else:
            c = _axis_forward(_axis_forward(a, self.kinds[0], 1), self.kinds[1], 2)
            c *= self.response
            z = _axis_inverse(_axis_inverse(c, self.kinds[1], 2), self.kinds[0], 1)
        z = z.reshape(k, -1)
        z *= self.vf
        return z

    def keep(self, sel: np.ndarray) -> _DctPreconditioner:
        out = _DctPreconditioner.__new__(_DctPreconditioner)
        out.response, out.vf, out.shape, out.dtype = self.response[sel], self.vf[sel], self.shape, self.dtype
        out.kinds, out.mats = self.kinds, self.mats
        return out


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-map inner products of two (K, n) stacks, shape (K,). (``np.vecdot``: about half the time of
    einsum for the window stacks, and a tile update takes ~250 of them; see docs/measurements.md.)"""
    return np.vecdot(a, b)


def _pcg(a_op, m_op, b, x, rtol, ftol, maxiter) -> tuple[np.ndarray, np.ndarray]:
    """Flexible preconditioned conjugate gradients for a stack of K independent systems (K, n).

    Map k stops when ||r_k|| <= rtol_k ||b_k|| or max |M r_k| <= ftol_k (checked before each step, like
    scipy's cg; a negative tolerance never stops). Returns the solutions and the iterations of each map.
    """
    k_maps = b.shape[0]
    out = np.empty_like(x)
    iters = np.zeros(k_maps, dtype=np.int64)
    active = np.arange(k_maps)
    r = b - a_op(x)
    z = m_op(r)
    rthr = np.where(rtol >= 0, rtol * np.sqrt(_dot(b, b)), -1.0)
    rz = _dot(r, z)
    p = z.copy()
    check_field = bool(np.any(ftol >= 0))
    check_norm = bool(np.any(rthr >= 0))  # window solves stop on the field rule alone
    for it in range(maxiter + 1):
        done = np.sqrt(_dot(r, r)) <= rthr if check_norm else np.zeros(rthr.shape, dtype=bool)
        if check_field:
            done |= np.abs(z).max(axis=1) <= ftol
        if it == maxiter:
            done[:] = True
        if done.any():
            out[active[done]] = x[done]
            iters[active[done]] = it
            keep = ~done
            if not keep.any():
                break
            active = active[keep]
            x, r, z, p, rz, rthr, ftol = (a[keep] for a in (x, r, z, p, rz, rthr, ftol))
            a_op, m_op = a_op.keep(keep), m_op.keep(keep)
        ap = a_op(p)
        pap = _dot(p, ap)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap != 0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        z = m_op(r)
        # flexible (Polak-Ribiere) beta: z_new . (r_new - r_old) / (z_old . r_old)
        beta = np.divide(-alpha * _dot(z, ap), rz, out=np.zeros_like(rz), where=rz != 0)
        rz = _dot(r, z)
        p *= beta[:, None]
        p += z
    return out, iters


def solve_map(
    y: np.ndarray,
    valid: np.ndarray,
    params: GmrfParams,
    *,
    mean: np.ndarray | float | None = None,
    labels: np.ndarray | None = None,
    x0: np.ndarray | None = None,
    boundary: np.ndarray | None = None,
    boundary_edges: tuple[np.ndarray, np.ndarray] | None = None,
    rtol: float | None = 1e-6,
    maxiter: int = 2000,
    preconditioner: str = "dct",
    field_tol: float | None = None,
) -> tuple[np.ndarray, int]:
    """Posterior mean of the GMRF given a map (the MAP solve).

    Parameters
    ----------
    y : ndarray of shape (ny, nx), the per-pixel map (values at invalid pixels are ignored)
    valid : ndarray of shape (ny, nx) bool, observed pixels
    params : hyperparameters (see :func:`learn_params`)
    mean : prior mean m (scalar or per pixel); default the mean of the valid pixels
    labels : optional phase labels; edges between different labels are cut
    x0 : warm start
    boundary, boundary_edges : for a sub-window solve, the fixed field outside the window contributes
        ``lam * sum_j x_j`` over active edges to outside neighbours; pass the precomputed term as ``boundary``
        (shape (ny, nx)) and the count of such edges per pixel in ``boundary_edges`` (see :func:`window_terms`)
    rtol : CG relative tolerance (see :class:`StopRule`); None: only ``field_tol``
    field_tol : stop (also) when the estimated error is below this at every pixel (map units)
    preconditioner : "dct" (see module doc) or "jacobi"

    Returns
    -------
    x : ndarray of shape (ny, nx), NaN at invalid pixels
    n_iter : CG iterations
    """
    valid = np.asarray(valid, bool)
    y = np.asarray(y, dtype=np.float64)
    if mean is not None:
        mean = np.broadcast_to(np.asarray(mean, float), y.shape)[None]
    stop = StopRule(rtol=rtol, field_tol=field_tol)
    x, it = solve_maps(
        y[None], valid[None], [params], labels=labels, mean=mean, x0=None if x0 is None else x0[None],
        boundary=None if boundary is None else boundary[None],
        boundary_edges=None if boundary_edges is None else np.asarray(boundary_edges)[None],
        stop=[stop], maxiter=maxiter, preconditioner=preconditioner,
    )
    return x[0], int(it[0])


def window_terms(
    field_: np.ndarray, valid: np.ndarray, labels: np.ndarray | None, window: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Boundary term for solving only ``window``: sum of fixed outside-neighbour values and their count.

    Only edges that are active in the full graph (both ends valid, same label) count.
    """
    ys, xs = window
    ny, nx = valid.shape
    y0, y1 = ys.start, ys.stop
    x0, x1 = xs.start, xs.stop
    shape = (y1 - y0, x1 - x0)
    bsum = np.zeros(shape)
    bcnt = np.zeros(shape)

    def add(inner_rows, inner_cols, outer_rows, outer_cols, target_rows, target_cols):
        ok = valid[inner_rows, inner_cols] & valid[outer_rows, outer_cols]
        if labels is not None:
            ok &= labels[inner_rows, inner_cols] == labels[outer_rows, outer_cols]
        val = np.where(ok, field_[outer_rows, outer_cols], 0.0)
        bsum[target_rows, target_cols] += np.nan_to_num(val)
        bcnt[target_rows, target_cols] += ok

    if y0 > 0:
        add(slice(y0, y0 + 1), xs, slice(y0 - 1, y0), xs, slice(0, 1), slice(None))
    if y1 < ny:
        add(slice(y1 - 1, y1), xs, slice(y1, y1 + 1), xs, slice(shape[0] - 1, shape[0]), slice(None))
    if x0 > 0:
        add(ys, slice(x0, x0 + 1), ys, slice(x0 - 1, x0), slice(None), slice(0, 1))
    if x1 < nx:
        add(ys, slice(x1 - 1, x1), ys, slice(x1, x1 + 1), slice(None), slice(shape[1] - 1, shape[1]))
    return bsum, bcnt


# --------------------------------------------------------------------------------------------- variance


def _chain_var(n: int, i: int, lam: float, eta: float, other: np.ndarray | None = None) -> float:
    """Posterior variance / s2 at position i of a free-boundary chain (or grid with ``other`` 1-D modes)."""
    k = np.arange(n)
    phi = np.cos(np.pi * k * (i + 0.5) / n) * np.sqrt(2.0 / n)
    phi[0] = np.sqrt(1.0 / n)
    mu = 4 * np.sin(np.pi * k / (2 * n)) ** 2
    if other is None:
        return float(np.sum(phi**2 / (1 + eta + lam * mu)))
    phi2_o, mu_o = other
    return float(np.sum(phi[:, None] ** 2 * phi2_o[None, :] / (1 + eta + lam * (mu[:, None] + mu_o[None, :]))))


def _modes(n: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(n)
    phi = np.cos(np.pi * k * (i + 0.5) / n) * np.sqrt(2.0 / n)
    phi[0] = np.sqrt(1.0 / n)
    return phi**2, 4 * np.sin(np.pi * k / (2 * n)) ** 2


def variance_table(params: GmrfParams) -> np.ndarray:
    """Posterior variance by neighbour pattern (4 bits: left, right, up, down present), 16 values.

    Exact for the free-boundary grid GMRF at an interior pixel (4 neighbours), a straight edge (3), a corner
    (2, adjacent), a one-pixel corridor (2, opposite), a corridor end (1) and an isolated pixel (0). Pixels
    near, but not on, a cut or the map edge get the interior value (an approximation: slightly low there).
    """
    lam, eta, s2 = params.lam, params.eta, params.s2
    n = int(min(max(16, 8 * np.sqrt(lam) + 8), 512))
    mid = n // 2
    interior = _chain_var(n, mid, lam, eta, _modes(n, mid))
    edge = _chain_var(n, 0, lam, eta, _modes(n, mid))
    corner = _chain_var(n, 0, lam, eta, _modes(n, 0))
    corridor = _chain_var(n, mid, lam, eta)
    chain_end = _chain_var(n, 0, lam, eta)
    isolated = 1.0 / (1.0 + eta)
    table = np.empty(16)
    for bits in range(16):
        left, right, up, down = (bits >> 0) & 1, (bits >> 1) & 1, (bits >> 2) & 1, (bits >> 3) & 1
        count = left + right + up + down
        if count == 4:
            table[bits] = interior
        elif count == 3:
            table[bits] = edge
        elif count == 2:
            table[bits] = corridor if (left and right) or (up and down) else corner
        elif count == 1:
            table[bits] = chain_end
        else:
            table[bits] = isolated
    return table * s2


def posterior_sd(valid: np.ndarray, labels: np.ndarray | None, params: GmrfParams) -> np.ndarray:
    """Approximate posterior standard deviation per pixel (NaN where invalid); see :func:`variance_table`."""
    h, v = grid_edges(valid, labels)
    bits = np.zeros(valid.shape, dtype=np.int64)
    bits[:, 1:] |= h.astype(np.int64)          # left neighbour present
    bits[:, :-1] |= h.astype(np.int64) << 1    # right
    bits[1:, :] |= v.astype(np.int64) << 2     # up
    bits[:-1, :] |= v.astype(np.int64) << 3    # down
    sd = _sd_table(params.s2, params.lam, params.eta)[bits]
    sd[~valid] = np.nan
    return sd


@lru_cache(maxsize=64)
def _sd_table(s2: float, lam: float, eta: float) -> np.ndarray:
    """sqrt of :func:`variance_table`, kept between calls (a window update refreshes the sd of every map with
    the same parameters; the table's spectral sums cost more than the lookup)."""
    out = np.sqrt(variance_table(GmrfParams(s2=s2, lam=lam, eta=eta)))
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------------- learning


@lru_cache(maxsize=64)
def block_eigenvalues(shape: tuple[int, int]) -> np.ndarray:
    """Eigenvalues of the free-boundary grid Laplacian on a block, in DCT-II order, shape ``shape``
    (read-only; kept between calls: every window solve needs them)."""
    by, bx = (int(v) for v in shape)
    my = 4 * np.sin(np.pi * np.arange(by) / (2 * by)) ** 2
    mx = 4 * np.sin(np.pi * np.arange(bx) / (2 * bx)) ** 2
    out = my[:, None] + mx[None, :]
    out.setflags(write=False)
    return out


def block_power(block: np.ndarray) -> np.ndarray:
    """Squared orthonormal 2-D DCT-II coefficients of one complete block (mean removed)."""
    c = dctn(block - block.mean(), type=2, norm="ortho")
    return c * c


def block_powers(blocks: np.ndarray) -> np.ndarray:
    """:func:`block_power` of a stack of blocks (m, by, bx) in one call, shape (m, by, bx)."""
    blocks = np.ascontiguousarray(blocks, dtype=np.float64)
    c = dctn(blocks - blocks.mean(axis=(1, 2), keepdims=True), type=2, axes=(1, 2), norm="ortho")
    return c * c


@dataclass
class BlockStats:
    """Sufficient statistic for :func:`learn_params`: summed DCT power per block shape.

    ``power[shape]`` is the sum over complete blocks of that shape of :func:`block_power`; ``count[shape]`` the
    number of blocks. Sums are order-independent, so tiles can add their blocks in any order.
    """

    power: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    count: dict[tuple[int, int], int] = field(default_factory=dict)

    def add(self, power: np.ndarray, n: int = 1) -> None:
        key = tuple(power.shape)
        self.power[key] = self.power.get(key, 0.0) + power
        self.count[key] = self.count.get(key, 0) + n

    @property
    def n_blocks(self) -> int:
        return int(sum(self.count.values()))


def map_block_stats(y: np.ndarray, valid: np.ndarray, block: int) -> BlockStats:
    """Block statistics of a whole map: complete b x b blocks on the grid anchored at pixel (0, 0)."""
    stats = BlockStats()
    by, bx = min(block, y.shape[0]), min(block, y.shape[1])
    for i in range(0, y.shape[0] - by + 1, by):
        for j in range(0, y.shape[1] - bx + 1, bx):
            if valid[i:i + by, j:j + bx].all():
                stats.add(block_power(y[i:i + by, j:j + bx]))
    return stats


def _profile_nll(log_lam: float, log_eta: float, terms) -> tuple[float, float]:
    """Negative log marginal likelihood with s2 profiled out; returns (nll per mode, s2_hat)."""
    nll, s2 = _profile_nll_curve(np.array([log_lam]), log_eta, terms)
    return float(nll[0]), float(s2[0])


def _profile_nll_curve(log_lam: np.ndarray, log_eta: float, terms) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_profile_nll` at several log_lam values at once (arrays of shape (n,))."""
    lam = np.exp(np.asarray(log_lam, dtype=np.float64))[:, None]
    eta = np.exp(log_eta)
    sum_log_g = np.zeros(lam.shape[0])
    weighted = np.zeros(lam.shape[0])
    n_modes = 0
    for mu, power, count in terms:
        g = 1.0 + 1.0 / (lam * mu + eta)  # marginal variance / s2 per mode
        sum_log_g += count * np.sum(np.log(g), axis=1)
        weighted += np.sum(power / g, axis=1)
        n_modes += count * mu.size
    s2 = weighted / n_modes
    nll = 0.5 * (n_modes * np.log(s2) + sum_log_g + n_modes) / n_modes
    return nll, s2


def _refine_min(f, lo: float, hi: float, best: tuple[float, float]) -> float:
    """Minimiser of a smooth scalar function f (vectorised over its argument) in [lo, hi]: a 33-point grid,
    the vertex of the parabola through its lowest point and their neighbours, then once more with points
    1/8 of a grid step apart around that vertex; the lowest point evaluated wins (``best`` = (x, f(x))
    included). On the 1.5-wide bracket of the log-lam search this lands within 1e-5 of the minimum (the
    bounded Brent search it replaces stopped at 1e-4) in four array expressions instead of ~25 scalar calls
    (2.5x faster per map, and the map model re-learns 11 maps per tile; see docs/measurements.md)."""
    x_best, f_best = best
    pts = np.linspace(lo, hi, 33)
    step = pts[1] - pts[0]
    for _ in range(2):
        vals = f(pts)
        j = int(np.argmin(vals))
        if vals[j] <= f_best:
            x_best, f_best = float(pts[j]), float(vals[j])
        if not 0 < j < pts.size - 1:
            break
        f0, f1, f2 = vals[j - 1], vals[j], vals[j + 1]
        curv = f0 - 2 * f1 + f2
        if not curv > 0:
            break
        vertex = float(np.clip(pts[j] + 0.5 * step * (f0 - f2) / curv, lo, hi))
        step /= 8
        pts = np.array([vertex - step, vertex, vertex + step])
    else:
        f_v = float(f(np.array([vertex]))[0])
        if f_v <= f_best:
            x_best = vertex
    return x_best


def _profile_nll_many(log_lam: np.ndarray, mu: np.ndarray, power: np.ndarray, count: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """:func:`_profile_nll_curve` of the intrinsic model (eta = 0) for M maps with one block shape each:
    ``log_lam`` (M, P), ``mu`` (L,) the block's modes, ``power`` (M, L) and ``count`` (M,) their statistics;
    returns (nll, s2) of shape (M, P), the same numbers as the one-map function."""
    lam = np.exp(np.asarray(log_lam, dtype=np.float64))[:, :, None]
    g = 1.0 + 1.0 / (lam * mu)
    sum_log_g = count[:, None] * np.sum(np.log(g), axis=2)
    weighted = np.sum(power[:, None, :] / g, axis=2)
    n_modes = (count * mu.size)[:, None]
    s2 = weighted / n_modes
    nll = 0.5 * (n_modes * np.log(s2) + sum_log_g + n_modes) / n_modes
    return nll, s2


def _refine_min_many(f, lo: np.ndarray, hi: np.ndarray, x_best: np.ndarray, f_best: np.ndarray) -> np.ndarray:
    """:func:`_refine_min` for M functions at once: ``f`` maps (M, P) arguments to (M, P) values, ``lo``,
    ``hi``, ``x_best``, ``f_best`` are (M,); the same steps and stopping rules per function."""
    m = lo.size
    rows = np.arange(m)
    x_best, f_best = x_best.astype(np.float64), f_best.astype(np.float64)
    pts = np.linspace(lo, hi, 33, axis=1)
    step = pts[:, 1] - pts[:, 0]
    alive = np.ones(m, dtype=bool)  # not stopped yet (a stop skips the final vertex check)
    vertex = np.zeros(m)
    for _ in range(2):
        vals = f(pts)
        j = np.argmin(vals, axis=1)
        vj = vals[rows, j]
        better = alive & (vj <= f_best)
        x_best = np.where(better, pts[rows, j], x_best)
        f_best = np.where(better, vj, f_best)
        alive &= (j > 0) & (j < pts.shape[1] - 1)
        jc = np.clip(j, 1, pts.shape[1] - 2)
        f0, f1, f2 = vals[rows, jc - 1], vals[rows, jc], vals[rows, jc + 1]
        curv = f0 - 2 * f1 + f2
        alive &= curv > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.clip(pts[rows, jc] + 0.5 * step * (f0 - f2) / curv, lo, hi)
        vertex = np.where(alive, v, vertex)
        step = step / 8
        pts = np.stack([vertex - step, vertex, vertex + step], axis=1)
    if alive.any():
        f_v = f(vertex[:, None])[:, 0]
        x_best = np.where(alive & (f_v <= f_best), vertex, x_best)
    return x_best


def learn_params_many(stats: list[BlockStats]) -> list[GmrfParams | None]:
    """:func:`learn_params` (intrinsic) of several maps, the same results; maps whose statistics hold one
    block shape (the map model's) are searched together, one array expression per step for all of them
    (about half the time for the map model's 12 maps, see docs/measurements.md)."""
    out: list[GmrfParams | None] = [None] * len(stats)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, st in enumerate(stats):
        if len(st.power) == 1 and st.n_blocks > 0:
            groups.setdefault(next(iter(st.power)), []).append(i)
        else:
            out[i] = learn_params(st)
    for shape, idx in groups.items():
        mu = block_eigenvalues(shape).ravel()[1:]
        if mu.size == 0:
            continue
        power = np.stack([np.asarray(stats[i].power[shape], dtype=np.float64).ravel()[1:] for i in idx])
        count = np.array([stats[i].count[shape] for i in idx], dtype=np.float64)

        def curve(a, mu=mu, power=power, count=count):
            return _profile_nll_many(a, mu, power, count)[0]

        grid = np.linspace(np.log(LAM_BOUNDS[0]), np.log(LAM_BOUNDS[1]), 25)
        values = curve(np.broadcast_to(grid, (len(idx), grid.size)))
        k = np.argmin(values, axis=1)
        rows = np.arange(len(idx))
        lo_b, hi_b = grid[np.maximum(k - 1, 0)], grid[np.minimum(k + 1, grid.size - 1)]
        a = _refine_min_many(curve, lo_b, hi_b, grid[k], values[rows, k])
        nll, s2 = _profile_nll_many(a[:, None], mu, power, count)
        for r, i in enumerate(idx):
            out[i] = GmrfParams(s2=float(s2[r, 0]), lam=float(np.exp(a[r])), eta=0.0, n_blocks=stats[i].n_blocks,
                                nll=float(nll[r, 0]))
    return out


def learn_params(stats: BlockStats, *, intrinsic: bool = True) -> GmrfParams | None:
    """Maximum marginal likelihood (s2, lam, eta) from block statistics; None if there are no blocks.

    s2 is profiled out in closed form. ``intrinsic`` (default) fixes eta = 0: the first-order intrinsic GMRF
    of Rue & Held (2005), whose level is set by the data of each connected region, and lam alone is searched
    (a grid in log lam, refined, see :func:`_refine_min`). Otherwise (log lam, log eta) are searched on a coarse grid, then
    refined with L-BFGS-B inside ``LAM_BOUNDS`` x ``ETA_BOUNDS``. With a nearly flat field eta and lam trade
    off against each other (both flatten it), so the intrinsic model is better identified.
    """
    terms = []
    for shape, power in stats.power.items():
        mu = block_eigenvalues(shape).ravel()[1:]  # drop the constant mode
        terms.append((mu, np.asarray(power).ravel()[1:], stats.count[shape]))
    terms = [t for t in terms if t[0].size > 0]
    if not terms or stats.n_blocks == 0:
        return None
    if intrinsic:
        grid = np.linspace(np.log(LAM_BOUNDS[0]), np.log(LAM_BOUNDS[1]), 25)
        curve = lambda a: _profile_nll_curve(a, -np.inf, terms)[0]
        values = curve(grid)
        i = int(np.argmin(values))
        lo_b, hi_b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        a = _refine_min(curve, lo_b, hi_b, (float(grid[i]), float(values[i])))
        nll, s2 = _profile_nll(a, -np.inf, terms)
        return GmrfParams(s2=s2, lam=float(np.exp(a)), eta=0.0, n_blocks=stats.n_blocks, nll=nll)
    lo = np.log([LAM_BOUNDS[0], ETA_BOUNDS[0]])
    hi = np.log([LAM_BOUNDS[1], ETA_BOUNDS[1]])
    grid_lam = np.linspace(lo[0], hi[0], 15)
    grid_eta = np.linspace(lo[1], hi[1], 12)
    best = min((_profile_nll(a, b, terms)[0], a, b) for a in grid_lam for b in grid_eta)
    res = optimize.minimize(
        lambda p: _profile_nll(p[0], p[1], terms)[0], x0=[best[1], best[2]], method="L-BFGS-B",
        bounds=list(zip(lo, hi)),
    )
    p = res.x if res.fun <= best[0] else np.array([best[1], best[2]])
    nll, s2 = _profile_nll(p[0], p[1], terms)
    return GmrfParams(s2=s2, lam=float(np.exp(p[0])), eta=float(np.exp(p[1])), n_blocks=stats.n_blocks, nll=nll)
