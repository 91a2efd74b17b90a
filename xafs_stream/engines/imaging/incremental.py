"""Window solves for incremental map updates: a tile plus a halo, warm-started, the rest of the map fixed.

When a tile arrives only its pixels and their neighbourhood change (for fixed hyperparameters). The MRF
solutions are local: a change of the data at one pixel moves the GMRF posterior mean by an amount that
decays like exp(-r / sqrt(lam)) with the distance r, and an ICM label change only reaches pixels whose
neighbours changed. So the update solves the window W = tile + halo with everything outside W held at the
current field (Dirichlet boundary), then checks the outer ring of W: if the solution moved there by more than
the tolerance (or a label changed there), the halo is doubled and the window solved again. The result then
agrees with a solve of the whole map on the same data to that tolerance. Hyperparameter changes are
global; the map model (:mod:`.mapmodel`) re-solves the whole map when they drift (see ``drift_tol``).
"""

from __future__ import annotations

import numpy as np

from .gmrf import GmrfParams, solve_map, window_terms
from .potts import icm


def window(region: tuple[slice, slice], halo: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """``region`` grown by ``halo`` pixels on every side, clipped to the map."""
    ys, xs = region
    return (slice(max(0, ys.start - halo), min(shape[0], ys.stop + halo)),
            slice(max(0, xs.start - halo), min(shape[1], xs.stop + halo)))


def outer_ring(win: tuple[slice, slice], shape: tuple[int, int]) -> np.ndarray:
    """Bool mask (window shape) of the window's border pixels that touch the rest of the map."""
    ys, xs = win
    h, w = ys.stop - ys.start, xs.stop - xs.start
    ring = np.zeros((h, w), dtype=bool)
    if ys.start > 0:
        ring[0, :] = True
    if ys.stop < shape[0]:
        ring[-1, :] = True
    if xs.start > 0:
        ring[:, 0] = True
    if xs.stop < shape[1]:
        ring[:, -1] = True
    return ring


def is_full(win: tuple[slice, slice], shape: tuple[int, int]) -> bool:
    return win[0].start == 0 and win[1].start == 0 and win[0].stop == shape[0] and win[1].stop == shape[1]


def local_icm(
    unary: np.ndarray,
    valid: np.ndarray,
    labels: np.ndarray,
    beta: float,
    region: tuple[slice, slice],
    *,
    halo: int = 4,
    max_sweeps: int = 100,
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """ICM on ``region`` + halo with the labels outside fixed; grows the halo while the ring changes.

    Returns the updated full label map (a copy) and the window finally solved.
    """
    shape = labels.shape
    out = labels.copy()
    while True:
        win = window(region, halo, shape)
        ext = window(win, 1, shape)  # one more pixel: the fixed neighbours
        oy, ox = win[0].start - ext[0].start, win[1].start - ext[1].start
        update = np.zeros((ext[0].stop - ext[0].start, ext[1].stop - ext[1].start), dtype=bool)
        update[oy:oy + win[0].stop - win[0].start, ox:ox + win[1].stop - win[1].start] = True
        lab, _ = icm(unary[(slice(None),) + ext], valid[ext], beta, labels[ext], update=update,
                     max_sweeps=max_sweeps)
        new = lab[oy:oy + win[0].stop - win[0].start, ox:ox + win[1].stop - win[1].start]
        changed_ring = np.any((new != labels[win]) & outer_ring(win, shape))
        out[win] = new
        if not changed_ring or is_full(win, shape):
            return out, win
        out = labels.copy()
        halo *= 2


def local_gmrf(
    y: np.ndarray,
    valid: np.ndarray,
    current: np.ndarray,
    params: GmrfParams,
    region: tuple[slice, slice],
    *,
    mean: np.ndarray | None,
    labels: np.ndarray | None,
    tol: float,
    halo: int | None = None,
    rtol: float = 1e-6,
) -> tuple[np.ndarray, tuple[slice, slice], int]:
    """GMRF posterior mean on ``region`` + halo, the field outside fixed at ``current``.

    The halo starts at ``4 sqrt(lam) + 4`` px (the solution's response to a change decays like
    exp(-r / sqrt(lam)), so this is usually enough) and doubles while the solution on the window's outer ring moves
    by more than ``tol`` (map units). Returns the updated full field (a copy), the window and CG iterations.
    """
    shape = y.shape
    if halo is None:
        halo = int(np.ceil(4 * np.sqrt(params.lam))) + 4
    iters = 0
    while True:
        win = window(region, halo, shape)
        bsum, bcnt = window_terms(current, valid, labels, win)
        x, it = solve_map(y[win], valid[win], params, mean=None if mean is None else mean[win],
                          labels=None if labels is None else labels[win], x0=current[win],
                          boundary=bsum, boundary_edges=bcnt, rtol=rtol)
        iters += it
        old = current[win]
        ring = outer_ring(win, shape) & valid[win]
        delta = np.abs(np.where(ring & np.isfinite(old), x - old, 0.0))
        # a ring pixel with no previous value (new data) counts as changed
        new_ring = ring & ~np.isfinite(old)
        moved = float(delta.max()) if delta.size else 0.0
        if (moved <= tol and not new_ring.any()) or is_full(win, shape):
            out = current.copy()
            out[win] = x
            return out, win, iters
        halo *= 2
