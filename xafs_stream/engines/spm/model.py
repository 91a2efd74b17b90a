"""EXAFS sparse modeling end to end: χ(k) + FEFF paths → sparse N(R, σ²) → refined shells.

``spm_fit`` is the plain function doing the work; :class:`SparseShellModel` is a thin estimator-style shell
around it (hyperparameters in ``__init__``, ``fit(k, chi, paths)`` sets ``result_``, ``shells_``, ``alpha_``).

Steps: check the input once; put χ on a uniform k grid (the data's own step when it is uniform, else
0.05 1/Å by linear interpolation, as ``feffit`` does); estimate the noise from the high-R transform; build
the dictionary; choose α by k-fold cross-validation on a warm-started non-negative LASSO path with columns
scaled to unit norm (so the penalty counts signal, not N, and a broad shell is not traded for a comb of
narrow atoms); group the active atoms into shells; refine (N, R, σ², shared ΔE0) by least squares with
standard errors and an optional bootstrap over k; drop shells whose N is not significant and refit.
Overlapping shells (closer than OVERLAP_R) are refined from several starts, including the minimum of the
same fit at lower k weights; the minimum kept is the one with the smallest residual summed over k weights
0 … w (see :func:`~xafs_stream.engines.spm.selection.kweight_score`), not the smallest at weight w alone.
The other minima of the final model found from those starts widen its standard errors by their weight
(:func:`~xafs_stream.engines.spm.minima.combine_minima`); ``diagnostics["other_minima"]`` lists them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from .dictionary import build_dictionary
from .minima import combine_minima
from .paths import ScatteringPath
from .plausibility import StructurePrior
from .results import ShellFit, SpmResult
from .selection import kweight_score, merge_close, prune_once, try_splits
from .shells import SEED_STARTS, ShellModel, ShellSeed, group_atoms, refine_shells
from .solver import nn_lasso_cv
from .transform import NFFT, estimate_noise, ft_matrix, hanning_window, make_fit_space

DEFAULT_KSTEP = 0.05
OVERLAP_R = 0.3  # Å: shells closer than this get several refinement starts
FIXED_SIGMA2_STARTS = (0.003, 0.006, 0.010)  # Å²: extra starts (all shells) for overlapping shells
MERGE_R = 0.04  # Å: two refined shells of one pair closer than this are one shell
MAX_RESTARTS = 3  # refits from the sparse step after implausible shells were rejected
EXCLUDE_HALF = 0.2  # Å: a rejected shell's pair loses its candidates this close to its R (and its seed's)


@dataclass
class SpmSettings:
    """Settings of an SpM fit (defaults in brackets).

    kmin, kmax : k range, 1/Å [3, 14]; kweight : k weight [2]; dk : window taper, 1/Å [1]
    space : "k" or "r" ["r"]; rmin, rmax : R range of the fit (R space, not phase-corrected) or of the
        candidate distances (k space), Å [1.4, 3.2]
    r_range : candidate distances (rlo, rhi), Å [None → (rmin, rmax)]; the R window is not phase-corrected,
        so set rmax ~0.3-0.5 Å above the |χ(R)| peak of the last shell wanted
    r_step : candidate R step, Å [0.01]; sigma2_grid : candidate σ², Å² [0.001 … 0.030 step 0.001]
    pairs : restrict to these pairs [all single-scattering pairs of the paths]
    n_folds : cross-validation folds over k points [5]; n_alphas [40]; alpha_eps : α_min/α_max [1e-3]
    cv_rule : "1se" or "min" ["1se"]
    gap : atoms of one pair closer than this (Å) form one shell [0.05]
    min_fraction : drop atom groups with less than this fraction of the total sparse N [0.03]
    s02 : S0² [1.0]; fit_s02 with fixed_n : refine S0² with N fixed per shell [False]
    de0 : E0 shift used for the dictionary and as the refinement's start, eV [0]
    noise : noise σ in χ(k) [None → estimated from 15-25 Å of the transform]
    prune_sigma : drop shells with N < prune_sigma · σ_N and refit [2.0]
    split_test : "auto", "on" or "off" (True/False mean on/off): try two sub-shells for a strong shell, kept
        when the CV error drops by split_z SEs and both are plausible; "auto" tries only where the path set
        has two or more distances of the pair within structure_window ["auto", 2.0]
    structure_window : candidates of a pair only within this of one of its FEFF paths' reff, Å; None: any R
        (see :mod:`.plausibility`) [0.35]
    max_n_factor : a shell with N above this times the path set's neighbours near its R is implausible
        (None: no limit) [1.5]; shells with σ² at the refinement bound are implausible too; implausible
        shells are removed and the rest refitted; then the whole fit is redone (up to
        ``MAX_RESTARTS`` times) with their pair's candidates near them excluded, so that the signal they
        took can go to the shells the data hold
    exclude : (pair, rlo, rhi) candidate regions left out of the dictionary, Å [()]
    select_kweights : k weights whose summed residual chooses between the refinement minima of overlapping
        shells (each weight below kweight also gives a start) [None → kweight, kweight - 1, … ≥ 0]
    n_bootstrap : bootstrap refits over k [0]; seed : bootstrap random seed [0]
    """

    kmin: float = 3.0
    kmax: float = 14.0
    kweight: float = 2.0
    dk: float = 1.0
    space: str = "r"
    rmin: float = 1.4
    rmax: float = 3.2
    r_range: tuple[float, float] | None = None
    r_step: float = 0.01
    sigma2_grid: np.ndarray | None = None
    pairs: tuple[str, ...] | None = None
    n_folds: int = 5
    n_alphas: int = 40
    alpha_eps: float = 1e-3
    cv_rule: str = "1se"
    gap: float = 0.05
    min_fraction: float = 0.03
    s02: float = 1.0
    fit_s02: bool = False
    fixed_n: tuple[float, ...] | None = None
    de0: float = 0.0
    noise: float | None = None
    prune_sigma: float = 2.0
    split_test: bool | str = "auto"
    split_z: float = 2.0
    structure_window: float | None = 0.35
    max_n_factor: float | None = 1.5
    exclude: tuple[tuple[str, float, float], ...] = ()
    select_kweights: tuple[float, ...] | None = None
    n_bootstrap: int = 0
    seed: int = 0

    def as_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


def _check_inputs(k, chi, paths, s: SpmSettings) -> tuple[np.ndarray, np.ndarray]:
    try:
        k = np.asarray(k, dtype=float)
        chi = np.asarray(chi, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"k, chi: must be numeric arrays ({exc})") from None
    if k.ndim != 1 or chi.ndim != 1 or k.shape != chi.shape:
        raise InputError(f"k, chi: must be 1-D of equal length, got shapes {k.shape} and {chi.shape}")
    if k.size < 16:
        raise InputError(f"k: need at least 16 points, got {k.size}")
    if not np.all(np.isfinite(k)):
        raise InputError("k: contains NaN or infinite values")
    bad = ~np.isfinite(chi)
    if bad.any():
        raise InputError(f"chi: {int(bad.sum())} NaN/infinite values (first at k = {k[bad][0]:.3f} 1/Å)")
    if np.any(np.diff(k) <= 0):
        raise InputError("k: must be strictly increasing")
    if not paths:
        raise InputError("paths: no FEFF paths given")
    if not all(isinstance(p, ScatteringPath) for p in paths):
        raise InputError("paths: every item must be a ScatteringPath (see xafs_stream.io.feff.read_feff_dir)")
    if s.space not in ("k", "r"):
        raise InputError(f"space: must be 'k' or 'r', got {s.space!r}")
    if not (0 < s.kmin < s.kmax):
        raise InputError(f"kmin, kmax: need 0 < kmin < kmax, got {s.kmin}, {s.kmax}")
    if s.kmin < k[0] - 1e-6 or s.kmax > k[-1] + 1e-6:
        raise InputError(
            f"kmin, kmax: {s.kmin}-{s.kmax} 1/Å is outside the data's k range {k[0]:.2f}-{k[-1]:.2f}"
        )
    if s.kweight < 0 or s.kweight > 4:
        raise InputError(f"kweight: must be in 0..4, got {s.kweight}")
    if s.dk < 0:
        raise InputError(f"dk: must be ≥ 0, got {s.dk}")
    if not (0 <= s.rmin < s.rmax):
        raise InputError(f"rmin, rmax: need 0 ≤ rmin < rmax, got {s.rmin}, {s.rmax}")
    if s.n_folds < 2:
        raise InputError(f"n_folds: need at least 2, got {s.n_folds}")
    if s.n_bootstrap < 0:
        raise InputError(f"n_bootstrap: must be ≥ 0, got {s.n_bootstrap}")
    if not (s.s02 > 0):
        raise InputError(f"s02: must be > 0, got {s.s02}")
    if s.noise is not None and not (s.noise > 0):
        raise InputError(f"noise: must be > 0 when given, got {s.noise}")
    if s.split_test not in (True, False, "auto", "on", "off"):
        raise InputError(f"split_test: must be 'auto', 'on' or 'off', got {s.split_test!r}")
    try:
        ok = all(isinstance(e[0], str) and float(e[1]) <= float(e[2]) and len(e) == 3 for e in s.exclude)
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        raise InputError(f"exclude: give (pair, rlo, rhi) triples with rlo <= rhi (Å), got {s.exclude!r}")
    for name in ("structure_window", "max_n_factor"):
        value = getattr(s, name)
        if value is not None and not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise InputError(f"{name}: must be a number > 0 or None, got {value!r}")
    if s.select_kweights is not None:
        try:
            weights = np.asarray(s.select_kweights, dtype=float).ravel()
        except (TypeError, ValueError):
            raise InputError(f"select_kweights: must be numbers, got {s.select_kweights!r}") from None
        if weights.size == 0 or not np.all((weights >= 0) & (weights <= 4)):
            raise InputError(
                f"select_kweights: need one or more k weights in 0..4, got {s.select_kweights!r}"
            )
    return k, chi


def selection_kweights(s: SpmSettings) -> tuple[float, ...]:
    """k weights that choose between refinement minima: ``select_kweights`` or kweight, kweight - 1, … ≥ 0."""
    if s.select_kweights is not None:
        return tuple(float(w) for w in np.ravel(s.select_kweights))
    return tuple(float(s.kweight - i) for i in range(int(np.floor(s.kweight + 1e-9)) + 1))


def uniform_grid(k: np.ndarray, chi: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """χ on the grid k_i = i·δk from 0 to the last data point (δk = data step if uniform, else 0.05).

    Returns (grid, chi_on_grid, interpolated). Points below the data range are 0 (outside any window).
    """
    steps = np.diff(k)
    step = float(np.median(steps))
    uniform = np.allclose(steps, step, rtol=1e-3, atol=1e-6) and abs(k[0] / step - round(k[0] / step)) < 1e-3
    kstep = step if uniform and 0.01 <= step <= 0.1 else DEFAULT_KSTEP
    grid = kstep * np.arange(int(np.floor(k[-1] / kstep + 1e-6)) + 1)
    values = np.interp(grid, k, chi, left=0.0, right=chi[-1])
    values[grid < k[0] - 1e-9] = 0.0
    return grid, values, not (uniform and kstep == step)


def transform_r(
    grid: np.ndarray, chi_grid: np.ndarray, s: SpmSettings, rmax_out: float
) -> tuple[np.ndarray, np.ndarray]:
    """Complex χ(R) (Hanning window over kmin..kmax, k-weighted) for R = 0 … rmax_out on the FFT R grid."""
    kstep = grid[1] - grid[0]
    rstep = np.pi / (kstep * NFFT)
    r = rstep * np.arange(int(rmax_out / rstep) + 1)
    weight = hanning_window(grid, s.kmin, s.kmax, s.dk) * grid**s.kweight
    m = ft_matrix(grid, weight, r, kstep)
    out = m @ chi_grid
    n = len(r)
    return r, out[:n] + 1j * out[n:]


def _prune_all(fs, chi, seeds, fit, s: SpmSettings, refine_kw: dict):
    """Merge shells of one pair that refined onto each other, drop the least significant shell, refit;
    until every N ≥ prune_sigma·σ_N and no two shells of a pair are closer than MERGE_R."""
    pruned = []
    while True:
        merged = merge_close(fit, seeds, MERGE_R)
        if merged is not None:
            seeds = merged
            fit = refine_shells(fs, chi, seeds, de0=fit.de0, **refine_kw)
            continue
        fewer = prune_once(fit, seeds, s.prune_sigma)
        if fewer is None:
            return seeds, fit, pruned
        pruned += [round(x.r, 3) for x in seeds if x not in fewer]
        seeds = fewer
        fit = refine_shells(fs, chi, seeds, de0=fit.de0, **refine_kw)


def _reject_implausible(fs, chi, seeds, fit, s: SpmSettings, refine_kw: dict, prior: StructurePrior):
    """Remove implausible shells (:meth:`StructurePrior.implausible`) one at a time, refitting after each,
    until none is left; returns the seeds, fit and one note per removed shell (pair, n, r, sigma2, reason)."""
    rejected: list[dict] = []
    while len(seeds) > 1:
        reasons = [prior.implausible(sh.pair, sh.n, sh.r, sh.sigma2, sh.n_err) for sh in fit.shells]
        bad = [i for i, why in enumerate(reasons) if why]
        if not bad:
            break
        i = bad[0]
        sh = fit.shells[i]
        rejected.append(dict(pair=sh.pair, n=round(float(sh.n), 3), r=round(float(sh.r), 4),
                             seed_r=round(float(seeds[i].r), 4), sigma2=round(float(sh.sigma2), 5),
                             reason=reasons[i]))
        seeds = [x for j, x in enumerate(seeds) if j != i]
        fit = refine_shells(fs, chi, seeds, de0=fit.de0, **refine_kw)
    return seeds, fit, rejected


def _first_shell_peaks(prior: StructurePrior, pairs, r_range, r, chir, s: SpmSettings) -> dict:
    """Per pair: its shortest reff inside the candidate range and how high the data's |χ(R)| is where that
    shell would show (R - 0.6 … R - 0.1 Å, the phase shift), as a fraction of the |χ(R)| maximum in the
    fit's R range. The verdict flags a pair with a clear peak that the result does not contain."""
    mag = np.abs(chir)
    inside = (r >= s.rmin) & (r <= s.rmax)
    top = float(mag[inside].max()) if inside.any() else 0.0
    out = {}
    for pair in pairs:
        reffs = [reff for reff, _ in prior.neighbours.get(pair, ()) if r_range[0] <= reff <= r_range[1] + 0.3]
        if not reffs or top <= 0:
            continue
        reff = min(reffs)
        win = (r >= max(reff - 0.6, s.rmin)) & (r <= min(reff - 0.1, s.rmax))
        frac = float(mag[win].max()) / top if win.any() else 0.0
        out[pair] = {"reff": round(reff, 4), "peak_fraction": round(frac, 3)}
    return out


def _refined_as_seeds(fit, seeds: list[ShellSeed]) -> list[ShellSeed]:
    return [replace(x, n=sh.n, r=sh.r, sigma2=sh.sigma2) for x, sh in zip(seeds, fit.shells, strict=True)]


def _other_starts(fs, chi, dictionary, coef, seeds, fit, s: SpmSettings, refine_kw: dict):
    """Refit the kept shells from other starts when shells overlap; keep the minimum of smallest
    :func:`kweight_score` (residual summed over k weights 0 … w).

    Starts: the "mode" and "narrow" groupings of the sparse atoms; the moment start with every σ² set to
    each of FIXED_SIGMA2_STARTS; and, per lower k weight w' of ``selection_kweights``, the minimum of the
    same fit at weight w' (from the moment start and the settings' ΔE0). The N-σ² and R-ΔE0 correlations
    of shells closer than OVERLAP_R leave more than one local minimum. Measured on Fe-O 4 @ 2.00 Å + Fe-Fe
    4 @ 2.10 Å (σ² 0.005, 0.3 % noise, R-space k² fit, 54 noise realisations, minima enumerated from 30
    random starts each): the minimum with the smallest k²-residual was a wrong one in 10 of them (mostly
    Fe-O σ² 0.011-0.015 Å² with ΔE0 -1.2 to -1.9 eV and N 10-25 % high), differing from the right one
    mainly below k ≈ 5 1/Å, where the k² weight hides it; the residual summed over weights 0, 1, 2 chose
    the minimum nearest the truth in 53. In some realisations every start from the sparse solution
    reached the wrong minimum; the start from the k⁰ fit reached the right one in the 5 such cases
    inspected. Well separated shells converge to one answer from every start, so they are refined once.
    """
    weights = selection_kweights(s)
    score = {"moments": kweight_score(fs, chi - fit.model_chi, weights)}
    rfactors = {"moments": fit.r_factor}
    minima = [fit]
    r_kept = np.sort([x.r for x in seeds])
    if len(r_kept) < 2 or float(np.min(np.diff(r_kept))) >= OVERLAP_R:
        return seeds, fit, dict(r_factor=rfactors, kweight_score=score, chosen="moments"), minima
    starts = {}
    for start in SEED_STARTS[1:]:
        cand = group_atoms(dictionary, coef, gap=s.gap, min_fraction=s.min_fraction, start=start)
        # the same clusters as the kept seeds (pruned ones stay out)
        cand = [c for c in cand if any(c.pair == k.pair and abs(c.r - k.r) < 0.1 for k in seeds)]
        if len(cand) == len(seeds):
            starts[start] = (cand, fit.de0)
    for value in FIXED_SIGMA2_STARTS:
        starts[f"sigma2={value}"] = ([replace(x, sigma2=value) for x in seeds], fit.de0)
    for w in sorted({w for w in weights if w < s.kweight}):
        low = refine_shells(fs.with_kweight(w), chi, seeds, de0=s.de0, **refine_kw)
        starts[f"kweight={w:g}"] = (_refined_as_seeds(low, seeds), low.de0)
    best = "moments"
    for name, (cand, de0) in starts.items():
        trial = refine_shells(fs, chi, cand, de0=de0, **refine_kw)
        minima.append(trial)
        rfactors[name] = trial.r_factor
        score[name] = kweight_score(fs, chi - trial.model_chi, weights)
        if score[name] < score[best]:
            best, seeds, fit = name, cand, trial
    return seeds, fit, dict(r_factor=rfactors, kweight_score=score, chosen=best), minima


def _model_on_grid(fit: ShellFit, seeds: list[ShellSeed], grid: np.ndarray, s: SpmSettings) -> np.ndarray:
    """χ(k) of the refined shells on the whole uniform grid (0 below 0.5 1/Å, where no window reaches)."""
    out = np.zeros_like(grid)
    sel = grid >= 0.5
    model = ShellModel([x.path for x in seeds], grid[sel], s02=fit.s02)
    theta = model.pack(
        np.array([x.n for x in fit.shells]),
        np.array([x.r for x in fit.shells]),
        np.array([x.sigma2 for x in fit.shells]),
        fit.de0,
    )
    out[sel] = model.chi(theta)
    return out


def spm_fit(k: np.ndarray, chi: np.ndarray, paths: list[ScatteringPath], **settings) -> SpmResult:
    """Sparse-modeling EXAFS fit of χ(k) with FEFF paths.

    Parameters
    ----------
    k : ndarray of shape (n,), in 1/Å, strictly increasing
    chi : ndarray of shape (n,), χ(k) (not k-weighted)
    paths : FEFF paths (see :func:`xafs_stream.io.feff.read_feff_dir`); single-scattering ones are used
    **settings : fields of :class:`SpmSettings` (kmin, kmax, kweight, space, rmin, rmax, r_range, ...)

    Returns
    -------
    SpmResult

    Raises
    ------
    InputError
        NaN in χ, k range outside the data or the FEFF tables, empty dictionary, no paths, bad settings.
    """
    unknown = set(settings) - set(SpmSettings.__dataclass_fields__)
    if unknown:
        raise InputError(
            f"unknown settings {sorted(unknown)}; known: {sorted(SpmSettings.__dataclass_fields__)}"
        )
    s = SpmSettings(**settings)
    k, chi = _check_inputs(k, chi, paths, s)
    rejected: list[dict] = []
    for restart in range(MAX_RESTARTS + 1):
        res = _fit_once(k, chi, paths, s)
        now = [dict(r, restart=restart) for r in res.diagnostics["rejected_shells"]]
        rejected += now
        new = tuple((r["pair"], round(min(r["r"], r["seed_r"]) - EXCLUDE_HALF, 3),
                     round(max(r["r"], r["seed_r"]) + EXCLUDE_HALF, 3)) for r in now)
        if not now or restart == MAX_RESTARTS or set(new) <= set(s.exclude):
            break
        s = replace(s, exclude=(*s.exclude, *new))
    res.diagnostics["rejected_shells"] = rejected
    res.diagnostics["restarts"] = restart
    return res


def _fit_once(k: np.ndarray, chi: np.ndarray, paths: list[ScatteringPath], s: SpmSettings) -> SpmResult:
    """One pass of :func:`spm_fit` (checked inputs, settings as a dataclass)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    grid, chi_grid, interpolated = uniform_grid(k, chi)
    kstep = float(grid[1] - grid[0])
    fs = make_fit_space(
        kstep,
        space=s.space,
        kmin=s.kmin,
        kmax=s.kmax,
        kweight=s.kweight,
        dk=s.dk,
        rmin=s.rmin,
        rmax=s.rmax,
        k_limit=float(grid[-1]),
    )
    cols = np.round(fs.k / kstep).astype(int)
    chi_fit_grid = chi_grid[cols]
    noise = (
        s.noise
        if s.noise is not None
        else estimate_noise(grid, chi_grid, kmin=s.kmin, kmax=s.kmax, kweight=s.kweight, dk=s.dk)
    )
    # Candidate distances default to the fit's R range. (Tried: extending them 0.3 Å above rmax in R space
    # lets a shell that only leaks into the window edge enter the table with a meaningless N and σ².)
    r_range = tuple(s.r_range) if s.r_range is not None else (max(s.rmin, 0.5), s.rmax)
    dictionary = build_dictionary(
        paths, fs, r_range=r_range, r_step=s.r_step, sigma2_grid=s.sigma2_grid, pairs=s.pairs, de0=s.de0
    )
    timings["dictionary_s"] = time.perf_counter() - t0
    prior = StructurePrior.from_paths(paths, window=s.structure_window, n_factor=s.max_n_factor)
    allowed = np.zeros(dictionary.atom_r.shape, bool)
    for ip, pair in enumerate(dictionary.pairs):
        mine = dictionary.atom_pair == ip
        allowed[mine] = prior.allowed(pair, dictionary.atom_r[mine])
    for pair, lo_r, hi_r in s.exclude:
        if pair in dictionary.pairs:
            ip = dictionary.pairs.index(pair)
            allowed &= ~((dictionary.atom_pair == ip) & (dictionary.atom_r >= lo_r) & (dictionary.atom_r <= hi_r))
    if not allowed.any():
        raise InputError(
            f"no candidate neighbour in R {r_range[0]}-{r_range[1]} Å lies within {s.structure_window} Å of a "
            "FEFF path of the path set (set structure_window to None to allow any distance)"
        )
    if not allowed.all():  # a zero column never enters the non-negative LASSO
        dictionary.chi[:, ~allowed] = 0.0
        dictionary.matrix[:, ~allowed] = 0.0

    t1 = time.perf_counter()
    norms = np.linalg.norm(dictionary.matrix, axis=0)
    if not np.all(norms[allowed] > 0):
        raise InputError(
            "dictionary: some candidate neighbours give no signal in the fit range "
            "(check kmin/kmax and rmin/rmax)"
        )
    norms = np.where(allowed, norms, 1.0)
    cv = nn_lasso_cv(
        dictionary.chi / norms,
        chi_fit_grid,
        fs.weight,
        ft=fs.ft,
        n_folds=s.n_folds,
        n_alphas=s.n_alphas,
        eps=s.alpha_eps,
        rule=s.cv_rule,
    )
    coef = cv.coef / norms
    timings["lasso_cv_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    seeds = group_atoms(dictionary, coef, gap=s.gap, min_fraction=s.min_fraction)
    if not seeds:
        raise InputError(
            "the sparse solution is empty at the cross-validated α: no shell found in "
            f"R {r_range[0]}-{r_range[1]} Å (is there EXAFS signal in k {s.kmin}-{s.kmax}?)"
        )
    refine_kw = dict(s02=s.s02, fit_s02=s.fit_s02, noise=noise)
    fixed_n = list(s.fixed_n) if s.fixed_n is not None else None
    if fixed_n is not None and len(fixed_n) != len(seeds):
        raise InputError(
            f"fixed_n: {len(fixed_n)} values given but the sparse solution has {len(seeds)} shells "
            f"at R = {[round(x.r, 3) for x in seeds]} Å"
        )
    fit = refine_shells(fs, chi_fit_grid, seeds, fixed_n=fixed_n, de0=s.de0, **refine_kw)
    pruned: list[float] = []
    rejected: list[dict] = []
    split_notes: list[dict] = []
    minima: list[ShellFit] = []
    starts_info: dict = dict(r_factor={"moments": fit.r_factor}, kweight_score={}, chosen="moments")
    if fixed_n is None:
        seeds, fit, pruned = _prune_all(fs, chi_fit_grid, seeds, fit, s, refine_kw)
        seeds, fit, starts_info, minima = _other_starts(
            fs, chi_fit_grid, dictionary, coef, seeds, fit, s, refine_kw
        )
        seeds, fit, more = _prune_all(fs, chi_fit_grid, seeds, fit, s, refine_kw)
        pruned += more
        mode = {True: "on", False: "off"}.get(s.split_test, s.split_test)
        if mode != "off":
            seeds, fit, split_notes = try_splits(
                fs, chi_fit_grid, seeds, fit, n_folds=s.n_folds, z=s.split_z, refine_kw=refine_kw,
                may_split=None if mode == "on" else prior.may_split,
                plausible=lambda sh: prior.implausible(sh.pair, sh.n, sh.r, sh.sigma2, sh.n_err) is None,
            )
            if any(n["accepted"] for n in split_notes):
                seeds, fit, more = _prune_all(fs, chi_fit_grid, seeds, fit, s, refine_kw)
                pruned += more
        seeds, fit, rejected = _reject_implausible(fs, chi_fit_grid, seeds, fit, s, refine_kw, prior)
        if rejected:
            seeds, fit, more = _prune_all(fs, chi_fit_grid, seeds, fit, s, refine_kw)
            pruned += more
    if s.n_bootstrap > 0:
        fit = refine_shells(
            fs,
            chi_fit_grid,
            seeds,
            fixed_n=fixed_n,
            de0=fit.de0,
            n_bootstrap=s.n_bootstrap,
            rng=np.random.default_rng(s.seed),
            **refine_kw,
        )
    # Other minima of the final model that the data do not rule out widen its errors (see .minima).
    fit, minima_notes = combine_minima(fit, minima)
    timings["refine_s"] = time.perf_counter() - t2

    chi_sparse = dictionary.chi @ coef
    rmax_out = max(s.rmax + 2.0, 6.0)
    r_out, chir_data = transform_r(grid, chi_grid, s, rmax_out)
    model_grid = _model_on_grid(fit, seeds, grid, s)
    _, chir_fit = transform_r(grid, model_grid, s, rmax_out)
    # k-space fits model the whole χ(k): signal from beyond the candidate range shows up as fake shells.
    outside = np.abs(chir_data[r_out > s.rmax + 0.5]) ** 2
    inside = np.abs(chir_data[(r_out >= s.rmin) & (r_out <= s.rmax)]) ** 2
    beyond = float(outside.sum() / max(inside.sum(), 1e-300))
    warnings = []
    if s.space == "k" and beyond > 0.1:
        warnings.append(
            f"k-space fit with {100 * beyond:.0f} % of the |χ(R)|² power of rmin..rmax beyond rmax + 0.5 Å: "
            "shells out there are not in the dictionary and distort the fit (raise rmax or fit in R space)"
        )
    timings["total_s"] = time.perf_counter() - t0
    params = s.as_dict()
    params.update(r_range=list(r_range), kstep=kstep, noise_used=noise)
    diagnostics = dict(
        timings=timings,
        interpolated_to_uniform_grid=interpolated,
        n_atoms=dictionary.n_atoms,
        n_active=int(np.count_nonzero(coef)),
        cv_index=cv.index,
        lasso_iterations=cv.path.n_iter,
        pruned_shells_r=pruned,
        rejected_shells=rejected,
        pair_first_shells=_first_shell_peaks(prior, tuple(prior.neighbours), r_range, r_out, chir_data, s),
        split_tests=split_notes,
        start_r_factors=starts_info["r_factor"],
        start_kweight_scores=starts_info["kweight_score"],
        start_chosen=starts_info["chosen"],
        other_minima=minima_notes,
        power_beyond_rmax=beyond,
        warnings=warnings,
        fit_success=fit.success,
        fit_message=fit.message,
        n_independent=fs.n_independent,
    )
    return SpmResult(
        shells=fit.shells,
        fit=fit,
        distribution=dictionary.distribution(coef),
        pairs=dictionary.pairs,
        r_grid=dictionary.r_grid,
        sigma2_grid=dictionary.sigma2_grid,
        alpha=cv.alpha,
        alphas=cv.alphas,
        cv_mean=cv.cv_mean,
        cv_se=cv.cv_se,
        k=fs.k,
        chi_data=chi_fit_grid,
        chi_sparse=chi_sparse,
        chi_fit=fit.model_chi,
        r=r_out,
        chir_data=chir_data,
        chir_fit=chir_fit,
        params=params,
        diagnostics=diagnostics,
    )


class SparseShellModel:
    """Estimator-style wrapper of :func:`spm_fit`.

    Parameters are the fields of :class:`SpmSettings`. ``fit(k, chi, paths)`` sets ``result_``
    (:class:`SpmResult`), ``shells_``, ``alpha_`` and returns ``self``.
    """

    def __init__(self, **settings) -> None:
        unknown = set(settings) - set(SpmSettings.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown settings {sorted(unknown)}")
        self.settings = dict(settings)

    def fit(self, k: np.ndarray, chi: np.ndarray, paths: list[ScatteringPath]) -> "SparseShellModel":
        self.result_ = spm_fit(k, chi, paths, **self.settings)
        self.shells_ = self.result_.shells
        self.alpha_ = self.result_.alpha
        return self
