"""Model selection after the sparse step: drop insignificant shells, split shells the data resolve.

The sparse solution with unit-norm columns prefers one broad atom over two narrow ones of the same pair
(the penalty counts signal, and two overlapping atoms cancel part of each other's signal). Two shells of
one pair closer than the resolution π/(2Δk) therefore come out as one broad shell. Each strong shell is
then tried as two sub-shells; the split is kept when the refined sub-shells are both significant and the
k-fold cross-validation error (the same interleaved folds over k points as the α choice) drops by more than
``z`` standard errors of the paired fold differences.
"""

from __future__ import annotations

import numpy as np

from .results import ShellFit
from .shells import ShellModel, ShellSeed, fit_weighted, refine_shells, start_vector
from .transform import FitSpace


def kweight_score(fit_space: FitSpace, residual: np.ndarray, kweights: tuple[float, ...]) -> float:
    """Residual summed over k weights, each in units of its own noise power: Σ_w ‖M_w r‖² / ‖M_w‖²_F.

    ``M_w`` is the fit-space map at k weight w (same k points, window and R range), r the χ(k) residual on
    ``fit_space.k``. For white noise in χ each term has the same expectation (ε² per point), so the terms
    are comparable and none dominates by its units. Used to choose between local minima of one refinement:
    the N-σ² and R-ΔE0 correlations of overlapping shells let a minimum trade a misfit at low k, which a
    k² weight hides, for a closer fit of high-k noise; summed over weights 0 … w such a minimum loses.
    """
    total = 0.0
    for w in kweights:
        m = fit_space.with_kweight(w).matrix
        total += float(np.sum((m @ residual) ** 2) / np.sum(m * m))
    return total


def prune_once(fit: ShellFit, seeds: list[ShellSeed], prune_sigma: float) -> list[ShellSeed] | None:
    """Seeds without the least significant shell (N < prune_sigma·σ_N), or None when all are significant.

    One at a time: in a fit with several noise shells the errors of a real shell can be inflated by its
    correlation with them (tried: dropping every shell with N < σ_N at once removed a real first shell).
    """
    if prune_sigma <= 0 or len(seeds) <= 1:
        return None
    score = [s.n / s.n_err if s.n_err > 0 else np.inf for s in fit.shells]
    worst = int(np.argmin(score))
    if score[worst] >= prune_sigma:
        return None
    return [seed for i, seed in enumerate(seeds) if i != worst]


def merge_close(fit: ShellFit, seeds: list[ShellSeed], min_dr: float) -> list[ShellSeed] | None:
    """Seeds with the closest pair of same-pair shells (|ΔR| < ``min_dr``) merged into one, or None.

    Two shells of one pair on top of each other are one shell split by the sparse step; their refined
    N, R and σ² are degenerate. The merged seed has the summed N and the N-weighted R and σ² (plus spread).
    """
    best = None
    for i in range(len(fit.shells)):
        for j in range(i + 1, len(fit.shells)):
            a, b = fit.shells[i], fit.shells[j]
            dr = abs(a.r - b.r)
            if a.pair == b.pair and dr < min_dr and (best is None or dr < best[0]):
                best = (dr, i, j)
    if best is None:
        return None
    _, i, j = best
    a, b = fit.shells[i], fit.shells[j]
    n = max(a.n + b.n, 1e-6)
    wa, wb = max(a.n, 0.0) / n, max(b.n, 0.0) / n
    r = wa * a.r + wb * b.r
    s2 = wa * a.sigma2 + wb * b.sigma2 + wa * wb * (a.r - b.r) ** 2
    merged = ShellSeed(pair=a.pair, n=n, r=r, sigma2=s2, path=seeds[i].path, sparse_n=seeds[i].sparse_n)
    return [merged if k == i else seed for k, seed in enumerate(seeds) if k != j]


def fold_errors(
    fit_space: FitSpace,
    chi: np.ndarray,
    seeds: list[ShellSeed],
    theta: np.ndarray,
    *,
    n_folds: int,
    s02: float = 1.0,
) -> np.ndarray:
    """Held-out error per fold of the shell model refined on the other folds (warm-started at ``theta``).

    Folds interleave k points (point i in fold i mod n_folds). In k space the error is the mean squared
    k-weighted held-out residual; in R space the held-out residual is transformed (scaled by
    n_k/n_test) and its mean square over the R rows is taken, as in the α cross-validation.
    """
    model = ShellModel([s.path for s in seeds], fit_space.k, s02=s02)
    _, bounds = start_vector(model, seeds, 0.0, s02)
    theta = np.clip(theta, bounds[0], bounds[1])
    n_k = len(fit_space.k)
    folds = np.arange(n_k) % n_folds
    out = np.zeros(n_folds)
    for f in range(n_folds):
        test = folds == f
        train = ~test
        w = train.astype(float) if fit_space.space == "k" else train * (n_k / train.sum())
        sol = fit_weighted(model, fit_space, chi, theta, bounds, w, max_nfev=40)
        resid = chi - model.chi(sol.x)
        if fit_space.space == "k":
            out[f] = np.mean((fit_space.weight[test] * resid[test]) ** 2)
        else:
            mapped = (fit_space.matrix[:, test] * (n_k / test.sum())) @ resid[test]
            out[f] = np.mean(mapped**2)
    return out


def _refined_seeds(fit: ShellFit, seeds: list[ShellSeed]) -> list[ShellSeed]:
    return [
        ShellSeed(pair=s.pair, n=sh.n, r=sh.r, sigma2=sh.sigma2, path=s.path, sparse_n=s.sparse_n)
        for s, sh in zip(seeds, fit.shells, strict=True)
    ]


def _significant_pair(fit: ShellFit, i: int, min_separation: float) -> bool:
    a, b = fit.shells[i], fit.shells[i + 1]
    return bool(
        a.n_err > 0
        and b.n_err > 0
        and a.n > 2 * a.n_err
        and b.n > 2 * b.n_err
        and abs(b.r - a.r) >= min_separation
    )


def try_splits(
    fit_space: FitSpace,
    chi: np.ndarray,
    seeds: list[ShellSeed],
    fit: ShellFit,
    *,
    n_folds: int = 5,
    z: float = 2.0,
    min_significance: float = 10.0,
    min_separation: float = 0.04,
    refine_kw: dict,
    may_split=None,
    plausible=None,
) -> tuple[list[ShellSeed], ShellFit, list[dict]]:
    """Try splitting each strong shell (N/σ_N ≥ ``min_significance``) into two sub-shells of its pair.

    ``may_split(pair, r)``: whether to try a shell at all (None: every strong shell); ``plausible(shell)``:
    a split is kept only when both refined sub-shells pass it (None: no check).

    Returns the (possibly) new seeds and fit, and one note per trial (R, accepted, CV gain in SEs).
    """
    notes: list[dict] = []
    order = np.argsort([-(s.n / s.n_err if s.n_err > 0 else 0.0) for s in fit.shells])
    tried: set[float] = set()
    for i0 in order:
        shell = fit.shells[i0]
        if shell.n_err <= 0 or shell.n / shell.n_err < min_significance or round(shell.r, 4) in tried:
            continue
        if may_split is not None and not may_split(shell.pair, shell.r):
            continue
        tried.add(round(shell.r, 4))
        current = _refined_seeds(fit, seeds)
        i = next(j for j, s in enumerate(current) if abs(s.r - shell.r) < 1e-9)
        base = current[i]
        half = max(0.04, float(np.sqrt(max(base.sigma2, 0.0) / 2.0)))
        sub_s2 = max(base.sigma2 / 2.0, 0.002)
        pieces = [
            ShellSeed(base.pair, base.n / 2, base.r - half, sub_s2, base.path, base.sparse_n),
            ShellSeed(base.pair, base.n / 2, base.r + half, sub_s2, base.path, base.sparse_n),
        ]
        trial = current[:i] + pieces + current[i + 1 :]
        # A short refinement first (split models of one broad shell are nearly degenerate and converge
        # slowly); the full one only when both sub-shells come out significant and the residual drops.
        fit2 = refine_shells(fit_space, chi, trial, de0=fit.de0, max_nfev=30, **refine_kw)
        gain = float("nan")
        ok = _significant_pair(fit2, i, min_separation) and fit2.r_factor < fit.r_factor
        if ok:
            fit2 = refine_shells(fit_space, chi, trial, de0=fit.de0, **refine_kw)
            ok = _significant_pair(fit2, i, min_separation)
        if ok and plausible is not None and not all(plausible(fit2.shells[j]) for j in (i, i + 1)):
            ok = False
            notes.append(dict(r=round(shell.r, 4), pair=shell.pair, accepted=False, cv_gain_se=float("nan"),
                              reason="a sub-shell is implausible"))
            continue
        if ok:
            e1 = fold_errors(fit_space, chi, current, fit.theta, n_folds=n_folds, s02=fit.s02)
            e2 = fold_errors(fit_space, chi, trial, fit2.theta, n_folds=n_folds, s02=fit2.s02)
            d = e1 - e2
            se = d.std(ddof=1) / np.sqrt(n_folds)
            gain = float(d.mean() / se) if se > 0 else float("inf") * np.sign(d.mean())
            ok = d.mean() > 0 and gain > z
        notes.append(dict(r=round(shell.r, 4), pair=shell.pair, accepted=bool(ok), cv_gain_se=gain))
        if ok:
            seeds, fit = trial, fit2
    return seeds, fit, notes
