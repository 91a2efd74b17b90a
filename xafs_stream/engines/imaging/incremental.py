"""Window solves for incremental map updates: a tile plus a halo, warm-started, the rest of the map fixed.

When a tile arrives only its pixels and their neighbourhood change (for fixed hyperparameters). The MRF
solutions are local: a change of the data at one pixel moves the GMRF posterior mean by an amount that
decays like exp(-r / sqrt(lam)) with the distance r, and an ICM label change only reaches pixels whose
neighbours changed. So the update solves the window W = tile + halo with everything outside W held at the
current field (Dirichlet boundary), then checks the outer ring of W: if the solution moved there by more than
the tolerance (or a label changed there), the halo is doubled and the window solved again. The result then
agrees with a solve of the whole map on the same data to that tolerance. Hyperparameter changes are
global; the map model (:mod:`.mapmodel`) re-solves the whole map when they drift (see ``drift_tol``).

Window sides are rounded up to lengths with small prime factors (``scipy.fft.next_fast_len``, see
:func:`sized_window`): the preconditioner's transform of a 118 px side took 3x as long as that of a 120 px
side (see docs/measurements.md), so the slightly larger window is the cheaper one. (Windows up to
``gmrf.MATRIX_TRANSFORM_MAX_SIDE`` px now apply the transforms as matrix products, whose cost does not depend
on the factors; the rounding is kept so that the windows, and so the results, do not depend on the transform
path.) Several maps whose windows coincide are solved together (:func:`.gmrf.solve_maps`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import next_fast_len

from .gmrf import HELD_FRACTION, GmrfParams, StopRule, solve_map, solve_maps, window_terms
from .potts import icm


def window(region: tuple[slice, slice], halo: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """``region`` grown by ``halo`` pixels on every side, clipped to the map."""
    ys, xs = region
    return (slice(max(0, ys.start - halo), min(shape[0], ys.stop + halo)),
            slice(max(0, xs.start - halo), min(shape[1], xs.stop + halo)))


def sized_window(region: tuple[slice, slice], halo: int, valid: np.ndarray) -> tuple[tuple[slice, slice],
                                                                                    tuple[str, str]]:
    """:func:`window`, grown (within the map) to side lengths that the preconditioner's transforms handle
    quickly, and the preconditioner basis of each axis ("D" where a side is held by observed pixels outside,
    see :func:`.gmrf.side_kinds`; else "N"). A DCT-II of n points runs as an FFT of n points, a DST-I as one
    of 2 (n + 1): n, respectively n + 1, is made a product of small primes (``scipy.fft.next_fast_len``)."""
    shape = valid.shape
    base = window(region, halo, shape)
    kinds = _held_axes(base, valid)
    out = []
    for sl, n, kind in zip(base, shape, kinds):
        lo, hi = sl.start, sl.stop
        length = hi - lo
        want = next_fast_len(length, real=True) if kind == "N" else next_fast_len(length + 1, real=True) - 1
        extra = min(want, n) - length
        up = min(extra - extra // 2, n - hi)  # grow both ways, and wherever the map leaves room
        down = min(extra - up, lo)
        up = min(extra - down, n - hi)
        out.append(slice(lo - down, hi + up))
    return (out[0], out[1]), kinds


def _held_axes(win: tuple[slice, slice], valid: np.ndarray) -> tuple[str, str]:
    """"D" for an axis where a side of ``win`` has valid pixels outside next to at least HELD_FRACTION of
    its valid pixels inside (those edges hold the window's field), else "N"."""
    (y0, y1), (x0, x1) = (win[0].start, win[0].stop), (win[1].start, win[1].stop)
    ny, nx = valid.shape
    sides = (((y0, slice(x0, x1)), (y0 - 1, slice(x0, x1)), y0 > 0),
             ((y1 - 1, slice(x0, x1)), (y1, slice(x0, x1)), y1 < ny),
             ((slice(y0, y1), x0), (slice(y0, y1), x0 - 1), x0 > 0),
             ((slice(y0, y1), x1 - 1), (slice(y0, y1), x1), x1 < nx))
    held = []
    for inner, outer, exists in sides:
        if not exists:
            held.append(False)
            continue
        inside = valid[inner]
        n_in = int(inside.sum())
        held.append(n_in > 0 and int((inside & valid[outer]).sum()) >= HELD_FRACTION * n_in)
    return ("D" if held[0] or held[1] else "N"), ("D" if held[2] or held[3] else "N")


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

    Returns the new labels of the window finally solved (``labels`` is not modified) and that window.
    """
    shape = labels.shape
    while True:
        win = window(region, halo, shape)
        ext = window(win, 1, shape)  # one more pixel: the fixed neighbours
        oy, ox = win[0].start - ext[0].start, win[1].start - ext[1].start
        inner = (slice(oy, oy + win[0].stop - win[0].start), slice(ox, ox + win[1].stop - win[1].start))
        update = np.zeros((ext[0].stop - ext[0].start, ext[1].stop - ext[1].start), dtype=bool)
        update[inner] = True
        lab, _ = icm(unary[(slice(None),) + ext], valid[ext], beta, labels[ext], update=update,
                     max_sweeps=max_sweeps)
        new = lab[inner]
        changed_ring = np.any((new != labels[win]) & outer_ring(win, shape))
        if not changed_ring or is_full(win, shape):
            return new, win
        halo *= 2


@dataclass
class WindowMap:
    """One map of a batched window update: data, validity and current field (full-map arrays), its
    hyperparameters, whether its edges are cut between labels, the accepted movement of the field on the
    window's outer ring (``ring_tol``) and the CG stop rule (map units)."""

    y: np.ndarray
    valid: np.ndarray
    current: np.ndarray
    params: GmrfParams
    cut: bool
    ring_tol: float
    stop: StopRule


def initial_halo(params: GmrfParams) -> int:
    """Starting halo (px): 2.5 sqrt(lam) + 2, rounded up to a multiple of 4 (so that maps with similar
    smoothing lengths share a window and are solved together).

    The response to a change decays like exp(-r / sqrt(lam)) along a line, faster in 2-D and across cuts.
    On the 512 x 512 phantom (a tile removed from a solved map and added back) the change of the solution
    fell below the 0.02 noise sd of the ring check within 2.5 sqrt(lam) + 2 px for lam ~ 2-28; a larger
    start only solves larger windows than needed (see docs/measurements.md). Where the start is too small
    the ring check doubles the halo.
    """
    return 4 * int(np.ceil((2.5 * np.sqrt(params.lam) + 2) / 4))


def local_gmrf_many(
    maps: list[WindowMap], region: tuple[slice, slice], labels: np.ndarray | None
) -> tuple[list[tuple[np.ndarray, tuple[slice, slice]]], int]:
    """GMRF posterior means of several maps on ``region`` + halo each, the fields outside held fixed.

    Each map starts with :func:`initial_halo`; maps whose windows coincide are solved together, and a map's
    halo doubles while its field on the window's outer ring moves by more than its ``ring_tol`` (or the
    ring holds new data). Returns, per map, the solved field on its window (NaN at invalid pixels) and the window; and the
    CG iterations (summed over the maps).
    """
    shape = maps[0].y.shape
    halos = [initial_halo(m.params) for m in maps]
    results: list = [None] * len(maps)
    pending = list(range(len(maps)))
    iters = 0
    while pending:
        groups: dict[tuple, list[int]] = {}
        for k in pending:
            win, kinds = sized_window(region, halos[k], maps[k].valid)
            groups.setdefault((win[0].start, win[0].stop, win[1].start, win[1].stop) + kinds, []).append(k)
        pending = []
        for (a, b, c, d, ky, kx), ks in groups.items():
            win = (slice(a, b), slice(c, d))
            lab = None if labels is None else labels[win]
            cut = np.array([maps[k].cut for k in ks])
            bsum, bcnt = _boundary_terms([maps[k] for k in ks], cut, labels, win)
            x, its = solve_maps(
                np.stack([maps[k].y[win] for k in ks]), np.stack([maps[k].valid[win] for k in ks]),
                [maps[k].params for k in ks], labels=lab, cut=cut,
                x0=np.stack([maps[k].current[win] for k in ks]), boundary=bsum, boundary_edges=bcnt,
                stop=[maps[k].stop for k in ks], kinds=(ky, kx),
            )
            iters += int(its.sum())
            ring = outer_ring(win, shape)
            for i, k in enumerate(ks):
                if _ring_ok(x[i], maps[k].current[win], ring & maps[k].valid[win], maps[k].ring_tol) \
                        or is_full(win, shape):
                    results[k] = (x[i], win)
                else:
                    halos[k] *= 2
                    pending.append(k)
    return results, iters


def _boundary_terms(maps: list[WindowMap], cut: np.ndarray, labels: np.ndarray | None,
                    win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`.gmrf.window_terms` of several maps on one window, as (K, h, w) stacks (one array operation
    per side of the window for all maps)."""
    shape = maps[0].y.shape
    (y0, y1), (x0, x1) = (win[0].start, win[0].stop), (win[1].start, win[1].stop)
    k = len(maps)
    bsum = np.zeros((k, y1 - y0, x1 - x0))
    bcnt = np.zeros((k, y1 - y0, x1 - x0))
    sides = []  # (inner pixels, outer neighbours, target in the window)
    if y0 > 0:
        sides.append(((y0, slice(x0, x1)), (y0 - 1, slice(x0, x1)), (0, slice(None))))
    if y1 < shape[0]:
        sides.append(((y1 - 1, slice(x0, x1)), (y1, slice(x0, x1)), (y1 - y0 - 1, slice(None))))
    if x0 > 0:
        sides.append(((slice(y0, y1), x0), (slice(y0, y1), x0 - 1), (slice(None), 0)))
    if x1 < shape[1]:
        sides.append(((slice(y0, y1), x1 - 1), (slice(y0, y1), x1), (slice(None), x1 - x0 - 1)))
    for inner, outer, target in sides:
        ok = np.stack([m.valid[inner] & m.valid[outer] for m in maps])
        if labels is not None and cut.any():
            ok[cut] &= labels[inner] == labels[outer]
        cur = np.stack([m.current[outer] for m in maps])
        # a held neighbour without a field value yet (NaN) adds 0 to the sum but counts as an edge (as
        # np.nan_to_num did; this is cheaper for these short rows)
        bsum[(slice(None),) + target] += np.where(ok & ~np.isnan(cur), cur, 0.0)
        bcnt[(slice(None),) + target] += ok
    return bsum, bcnt


def _ring_ok(x: np.ndarray, old: np.ndarray, ring: np.ndarray, tol: float) -> bool:
    """The field moved by at most ``tol`` on the ring, and the ring holds no pixel without a previous value."""
    if not ring.any():
        return True
    had = np.isfinite(old[ring])
    if not had.all():  # a ring pixel with no previous value (new data) counts as changed
        return False
    return float(np.max(np.abs(x[ring] - old[ring]))) <= tol


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
    """GMRF posterior mean on ``region`` + halo, the field outside fixed at ``current`` (one map).

    The halo starts at :func:`initial_halo` and doubles while the solution on the window's outer ring moves
    by more than ``tol`` (map units). Returns the updated full field (a copy), the window and CG iterations.
    """
    shape = y.shape
    if halo is None:
        halo = initial_halo(params)
    iters = 0
    while True:
        win = window(region, halo, shape)
        bsum, bcnt = window_terms(current, valid, labels, win)
        x, it = solve_map(y[win], valid[win], params, mean=None if mean is None else mean[win],
                          labels=None if labels is None else labels[win], x0=current[win],
                          boundary=bsum, boundary_edges=bcnt, rtol=rtol)
        iters += it
        ring = outer_ring(win, shape) & valid[win]
        if _ring_ok(x, current[win], ring, tol) or is_full(win, shape):
            out = current.copy()
            out[win] = x
            return out, win, iters
        halo *= 2
