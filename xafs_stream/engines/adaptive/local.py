"""E0 and the white line from local polynomials: linear models, so their Gaussian posterior and the variance a
new point would remove are exact (given the noise), and nearly free of the bias a global model brings.

Definitions (stated, because at 0.1 eV they matter):

- ``e0``: the inflection point of a cubic fitted to μ(E) within ``E0_HALF_EV`` of the first inflection
  point (:func:`rough_features`), i.e. -c2 / (3 c3) for p(x) = c0 + c1 x + c2 x² + c3 x³;
- ``whiteline``: the maximum of a quartic fitted within ``WL_HALF_EV`` of the highest point within 30 eV
  above E0.

Against the densely sampled noiseless spectra of the simulated beamline's samples these definitions differ
from the steepest segment / highest point of the (linearly interpolated) spectrum by 0.01-0.08 eV for E0 on
Cu, FeO, Fe2O3 and ZnSe, but 0.58 eV on Fe foil (a shoulder on the edge), and by 0.00-0.35 eV for the white
line: precision targets are about these estimators, not about an estimator-free "true" E0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

E0_HALF_EV = 2.0
WL_HALF_EV = 3.0
_DEGREE = {"e0": 3, "whiteline": 4}
HALF_WIDTH = {"e0": E0_HALF_EV, "whiteline": WL_HALF_EV}  # eV


@dataclass
class LocalEstimate:
    """A local polynomial fit and the target it gives.

    Attributes
    ----------
    name : "e0" or "whiteline"
    centre : the window's centre, eV (x = E - centre)
    half_width : eV
    coef : polynomial coefficients, lowest order first
    cov : their posterior covariance
    value : the target, eV
    sd : its posterior standard deviation, eV (delta method)
    grad : d value / d coef
    n_points : points in the window
    """

    name: str
    centre: float
    half_width: float
    coef: np.ndarray
    cov: np.ndarray
    value: float
    sd: float
    grad: np.ndarray
    n_points: int

    def basis(self, energy: np.ndarray) -> np.ndarray:
        """Rows [1, x, x², ...] for energies (eV), shape (n, degree + 1)."""
        x = np.asarray(energy, float) - self.centre
        return np.vander(x, self.coef.size, increasing=True)

    def inside(self, energy: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(energy, float) - self.centre) <= self.half_width

    def band(self, n: int = 41) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fitted polynomial over its window and its posterior sd: energies (eV), μ, sd of μ; ``n`` points."""
        energy = np.linspace(self.centre - self.half_width, self.centre + self.half_width, n)
        rows = self.basis(energy)
        sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", rows, self.cov, rows), 0.0))
        return energy, rows @ self.coef, sd


def _target(name: str, coef: np.ndarray, half: float) -> float:
    """The target (x relative to the centre) of polynomial coefficients ``coef`` (lowest order first), in
    closed form so that it moves smoothly with them: the inflection point -c2 / (3 c3) of a cubic whose slope
    has a maximum (c3 < 0); the highest stationary maximum (p' = 0, p'' < 0) of a quartic. Without one inside
    the window: the window's edge (which :func:`fit_local` reports as no estimate)."""
    P = np.polynomial.polynomial
    if name == "e0":
        if coef.size == 4 and coef[3] < 0:
            return float(np.clip(-coef[2] / (3.0 * coef[3]), -half, half))
        return float(half)
    d1, d2 = P.polyder(coef), P.polyder(coef, 2)
    roots = P.polyroots(d1)
    real = roots[np.abs(roots.imag) < 1e-9].real
    ok = real[(np.abs(real) <= half) & (P.polyval(real, d2) < 0)]
    if ok.size == 0:
        return float(half)
    return float(ok[int(np.argmax(P.polyval(ok, coef)))])


def fit_local(name: str, energy: np.ndarray, mu: np.ndarray, var: np.ndarray, centre: float
              ) -> LocalEstimate | None:
    """Weighted least-squares polynomial of the target's degree within its half width of ``centre`` (eV);
    ``var``: each point's noise variance. None with fewer than degree + 3 points there."""
    half, deg = HALF_WIDTH[name], _DEGREE[name]
    energy, mu, var = (np.asarray(a, float) for a in (energy, mu, var))
    sel = np.abs(energy - centre) <= half
    if sel.sum() < deg + 3 or np.unique(np.round(energy[sel], 3)).size < deg + 2:
        return None
    X = np.vander(energy[sel] - centre, deg + 1, increasing=True)
    w = 1.0 / var[sel]
    A = X.T @ (X * w[:, None])
    try:
        cov = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        return None
    coef = cov @ (X.T @ (w * mu[sel]))
    x0 = _target(name, coef, half)
    grad = np.zeros_like(coef)
    for j in range(coef.size):
        step = 1e-6 * max(abs(coef[j]), 1e-3)
        d = np.zeros_like(coef)
        d[j] = step
        grad[j] = (_target(name, coef + d, half) - _target(name, coef - d, half)) / (2 * step)
    sd = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
    if abs(x0) > 0.9 * half:  # at the window's edge: the feature lies outside, this is no estimate of it
        sd = float("inf")
    return LocalEstimate(name, float(centre), half, coef, cov, float(centre + x0), sd, grad, int(sel.sum()))


def estimate(name: str, energy: np.ndarray, mu: np.ndarray, var: np.ndarray, start: float, *,
             iterations: int = 4) -> LocalEstimate | None:
    """:func:`fit_local` re-centred on its own estimate until it stays within 0.05 eV of the centre. A fit
    whose feature lies at its window's edge (sd inf) is returned as it is, never followed: walking window by
    window would leave the first inflection point for the next feature up the edge."""
    centre = float(start)
    est = None
    for _ in range(iterations):
        new = fit_local(name, energy, mu, var, centre)
        if new is None or (est is not None and not np.isfinite(new.sd)):
            return est
        est = new
        if not np.isfinite(est.sd) or abs(est.value - centre) < 0.05:
            break
        centre = est.value
    return est


def _smoothed(energy: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The data (sorted by energy) interpolated on a 0.25 eV grid and smoothed over ~1 eV (Gaussian, σ of 4
    grid steps): the grid (eV) and the smoothed μ. Linear in ``mu``."""
    from scipy.ndimage import gaussian_filter1d

    order = np.argsort(energy)
    e, y = np.asarray(energy, float)[order], np.asarray(mu, float)[order]
    grid = np.arange(e[0], e[-1], 0.25)
    return grid, gaussian_filter1d(np.interp(grid, e, y), 4)


def _rows(energy: np.ndarray, idx: np.ndarray, *, slope: bool = False) -> np.ndarray:
    """Rows (len(idx), n) of the linear map from the data (sorted ``energy``, eV) to the smoothed curve of
    :func:`_smoothed`, or to its slope, at the grid points ``idx``: the smoothing of unit vectors."""
    op = np.empty((idx.size, energy.size))
    for j in range(energy.size):
        unit = np.zeros(energy.size)
        unit[j] = 1.0
        grid, smooth = _smoothed(energy, unit)
        op[:, j] = (np.gradient(smooth, grid) if slope else smooth)[idx]
    return op


def whiteline_rivals(energy: np.ndarray, mu: np.ndarray, var: np.ndarray, e0: float, *, z_share: float = 0.05
                     ) -> list[tuple[float, float]]:
    """Whether the white line (the highest point of the smoothed data within 30 eV above ``e0``, as in
    :func:`rough_features`) could be another local maximum there, given each point's noise variance ``var``.

    The smoothed curve is linear in the data, so the difference between the highest maximum and each other
    local maximum at least 3 eV away has a known variance; P(the other one is higher) = Φ(-Δ / se). Returns
    [(energy eV, probability of being the highest)] for the highest maximum and the rivals whose probability
    exceeds ``z_share`` (largest first), or [] when no rival reaches it. (A redraw of the data around its own
    values, as :func:`feature_candidates` does, understates this: the redraws centre on the observed noise.)"""
    from scipy.stats import norm

    energy, mu, var = (np.asarray(a, float) for a in (energy, mu, var))
    order = np.argsort(energy)
    energy, mu, var = energy[order], mu[order], var[order]
    if energy.size < 4:
        return []
    grid, smooth = _smoothed(energy, mu)
    if grid.size < 8:
        return []
    above = np.flatnonzero((grid >= e0) & (grid <= e0 + 30.0))
    if above.size < 3:
        return []
    s = smooth[above]
    peaks = [i for i in range(1, s.size - 1) if s[i] >= s[i - 1] and s[i] > s[i + 1]]
    best = int(np.argmax(s))
    if best not in peaks:
        peaks.append(best)
    rivals = [i for i in peaks if i != best and abs(grid[above][i] - grid[above][best]) >= 3.0]
    if not rivals:
        return []
    idx = above[[best, *rivals]]
    op = _rows(energy, idx)
    cov = (op * var[None, :]) @ op.T
    out = []
    for r in range(1, idx.size):
        se = np.sqrt(max(cov[0, 0] + cov[r, r] - 2 * cov[0, r], 1e-300))
        p = float(norm.cdf(-(smooth[idx[0]] - smooth[idx[r]]) / se))
        if p > z_share:
            out.append((float(grid[idx[r]]), p))
    if not out:
        return []
    return [(float(grid[idx[0]]), 1.0 - max(p for _, p in out)), *sorted(out, key=lambda c: -c[1])]


def rough_features(energy: np.ndarray, mu: np.ndarray, e0_guess: float) -> tuple[float, float]:
    """Where the local windows start (eV): the first inflection point, i.e. the first local maximum of the
    slope (data smoothed over ~1 eV) within 30 eV of ``e0_guess`` that reaches half the largest slope there
    (on Fe foil the shoulder at 7112 eV, not the steeper-looking main rise 8 eV above it, by the usual
    convention); and the highest point within 30 eV above it."""
    grid, smooth = _smoothed(energy, mu)
    if grid.size < 8:
        return float(e0_guess), float(e0_guess) + 10.0
    slope = np.gradient(smooth, grid)
    near = np.flatnonzero(np.abs(grid - e0_guess) <= 30.0)
    if near.size < 3:
        e0 = float(e0_guess)
    else:
        s = slope[near]
        peaks = [i for i in range(1, s.size - 1) if s[i] >= s[i - 1] and s[i] > s[i + 1] and s[i] >= 0.5 * s.max()]
        e0 = float(grid[near][peaks[0] if peaks else int(np.argmax(s))])
    above = (grid >= e0) & (grid <= e0 + 30.0)
    wl = float(grid[above][int(np.argmax(smooth[above]))]) if above.any() else e0 + 10.0
    return e0, wl


def feature_candidates(energy: np.ndarray, mu: np.ndarray, var: np.ndarray, e0_guess: float, *,
                       n_draws: int = 40, seed: int = 0) -> dict[str, list[tuple[float, float]]]:
    """Where :func:`rough_features` puts E0 and the white line when the data are redrawn within their noise
    (a parametric bootstrap, ``n_draws`` draws): name -> [(energy eV, share of draws)], largest share first,
    draws within 1.5 eV counted together. One entry with a share near 1: the feature is identified; several:
    the noise can move it from one feature to another (Fe foil's shoulder against its main rise, an oxide's
    first inflection near the rule's half-slope threshold), and a precise value of either would be
    precise about the wrong thing."""
    rng = np.random.default_rng(seed)
    sd = np.sqrt(np.asarray(var, float))
    draws = np.array([rough_features(energy, mu + rng.normal(0.0, 1.0, sd.size) * sd, e0_guess)
                      for _ in range(n_draws)])
    out = {}
    for j, name in enumerate(("e0", "whiteline")):
        values = np.sort(draws[:, j])
        groups: list[list[float]] = []
        for v in values:
            if groups and v - groups[-1][-1] <= 1.5:
                groups[-1].append(v)
            else:
                groups.append([v])
        out[name] = sorted(((float(np.median(g)), len(g) / n_draws) for g in groups), key=lambda c: -c[1])
    return out
