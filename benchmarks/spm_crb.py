"""Cramér-Rao bounds for shell parameters of synthetic χ(k), in the noise model of the SpM tests.

    python benchmarks/spm_crb.py

Noise model (tests/test_spm_synthetic.py): Gaussian white noise of standard deviation ε added to χ(k) on the
uniform grid k_i = 0.05·i 1/Å; "x % noise" there means ε = x/100 · max|χ(k)| over kmin..kmax. The other
reading checked here is "x % of the edge step": χ is normalised by the edge step, so white noise of x % of
the step in normalised μ(E) is ε = x/100 in χ (per point of the same grid).

Model: the EXAFS equation of :func:`xafs_stream.engines.spm.path_chi` with parameters per shell N, R, σ² and
one ΔE0 shared by all shells (S0² = 1 fixed), as the SpM refinement fits them. The Jacobian is taken by
central finite differences of ``path_chi`` (independent of the engine's analytic Jacobian).

Three covariances, all for noise variance ε² in χ:

``crb_k``    ε² (JᵀJ)⁻¹ with J over every grid point kmin ≤ k ≤ kmax: the bound for any unbiased estimator
             that uses χ over that k range. A k weight does not change it (it is a choice of estimator).
``crb_fit``  ε² (Jᵀ Mᵀ (M Mᵀ)⁺ M J)⁻¹: the bound for data reduced to the engine's fit vector y = M χ (k space:
             M = diag(k^w), so equal to ``crb_k``; R space: the windowed transform inside rmin..rmax, which
             throws away the information outside the R window and tapers the k ends).
``ls_fit``   ε² (JfᵀJf)⁻¹ Jfᵀ M Mᵀ Jf (JfᵀJf)⁻¹, Jf = M J: the asymptotic covariance of the unweighted least
             squares in the fit space that the engine runs (its reported covariance when its noise scale is
             ε); ``ls_fit`` ≥ ``crb_fit``, the ratio being the engine estimator's inefficiency.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FEO_DIR = ROOT / "tests" / "fixtures" / "feffit" / "feo_rocksalt_feff6l"
K = 0.05 * np.arange(0, 401)  # the grid of the tests and of the preprocessing engine


@dataclass
class Bound:
    """1σ bounds per shell (arrays of shape (n_shells,)) and for ΔE0; ``noise`` is the ε used."""

    n: np.ndarray
    r: np.ndarray
    sigma2: np.ndarray
    de0: float
    noise: float
    cov: np.ndarray


def model_chi(paths, shells, k, de0=0.0):
    """χ(k) of shells [(N, R, σ²)] along ``paths`` (one path per shell)."""
    from xafs_stream.engines.spm import path_chi

    return sum(
        path_chi(p, k, n=n, r=r, sigma2=s2, de0=de0) for p, (n, r, s2) in zip(paths, shells, strict=True)
    )


def jacobian(paths, shells, k, de0=0.0):
    """∂χ/∂θ, θ = [N_1, R_1, σ²_1, …, ΔE0], by central differences; shape (n_k, 3 S + 1)."""
    steps = (1e-4, 1e-6, 1e-6)
    cols = []
    for i, shell in enumerate(shells):
        for j, h in enumerate(steps):
            up = [list(s) for s in shells]
            dn = [list(s) for s in shells]
            up[i][j] += h
            dn[i][j] -= h
            cols.append((model_chi(paths, up, k, de0) - model_chi(paths, dn, k, de0)) / (2 * h))
    h = 1e-4
    cols.append((model_chi(paths, shells, k, de0 + h) - model_chi(paths, shells, k, de0 - h)) / (2 * h))
    return np.column_stack(cols)


def noise_sigma(paths, shells, level, *, kmin, kmax, reading="max_chi", de0=0.0):
    """ε in χ for ``level`` (0.01 = 1 %): ``reading`` "max_chi" (× max|χ| over kmin..kmax, the tests'
    definition) or "edge_step" (× the edge step, i.e. ε = level since χ is normalised by the step)."""
    if reading == "edge_step":
        return float(level)
    if reading != "max_chi":
        raise ValueError(f"reading must be 'max_chi' or 'edge_step', got {reading!r}")
    sel = (K >= kmin - 1e-9) & (K <= kmax + 1e-9)
    return float(level * np.max(np.abs(model_chi(paths, shells, K[sel], de0))))


def _bound(cov, n_shells, eps):
    err = np.sqrt(np.diag(cov))
    body = err[: 3 * n_shells].reshape(n_shells, 3)
    return Bound(n=body[:, 0], r=body[:, 1], sigma2=body[:, 2], de0=float(err[-1]), noise=eps, cov=cov)


def bounds(paths, shells, *, eps, kmin, kmax, kweight=2.0, space="k", rmin=1.0, rmax=3.0, dk=1.0, de0=0.0):
    """``{"crb_k", "crb_fit", "ls_fit"}`` → :class:`Bound` for white noise ε in χ (see the module doc)."""
    from xafs_stream.engines.spm import make_fit_space

    sel = (K >= kmin - 1e-9) & (K <= kmax + 1e-9)
    jk = jacobian(paths, shells, K[sel], de0)
    out = {"crb_k": _bound(eps**2 * np.linalg.inv(jk.T @ jk), len(shells), eps)}

    fs = make_fit_space(
        0.05, space=space, kmin=kmin, kmax=kmax, kweight=kweight, dk=dk, rmin=rmin, rmax=rmax, k_limit=K[-1]
    )
    j = jacobian(paths, shells, fs.k, de0)
    m = fs.matrix
    # Fisher information of y = M χ: Jᵀ Mᵀ (M Mᵀ)⁺ M J = |Vᵀ J|², V the right singular vectors of M
    # (the projection of J onto the row space of M).
    _, sv, vt = np.linalg.svd(m, full_matrices=False)
    vt = vt[sv > sv[0] * 1e-12]
    pj = vt @ j
    out["crb_fit"] = _bound(eps**2 * np.linalg.inv(pj.T @ pj), len(shells), eps)
    jf = m @ j
    a = np.linalg.inv(jf.T @ jf)
    out["ls_fit"] = _bound(eps**2 * a @ (jf.T @ (m @ (m.T @ jf))) @ a, len(shells), eps)
    return out


def cases():
    """The two pairs 0.1 Å apart of the issue: (label, paths, shells, R range of the fit)."""
    from xafs_stream.data import FEFF_DIR
    from xafs_stream.io.feff import read_feff_dir

    cu = read_feff_dir(FEFF_DIR / "cu_fcc_a3.615_feff6l").paths
    feo = read_feff_dir(FEO_DIR).paths
    return {
        "Cu-Cu 6@2.50 + Cu-Cu 6@2.60": ([cu[0], cu[0]], [(6.0, 2.50, 0.005), (6.0, 2.60, 0.005)], (1.8, 3.2)),
        "Fe-O 4@2.00 + Fe-Fe 4@2.10": (
            [feo[0], feo[1]],
            [(4.0, 2.00, 0.005), (4.0, 2.10, 0.005)],
            (1.0, 2.6),
        ),
    }


def within_rate(cov: np.ndarray, tol: np.ndarray, n_draws: int = 100_000, seed: int = 0) -> float:
    """P(every |error| ≤ tol) for Gaussian errors with covariance ``cov`` (first tol.size parameters)."""
    tol = np.ravel(tol)
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_normal(np.zeros(tol.size), cov[: tol.size, : tol.size], n_draws)
    return float(np.mean(np.all(np.abs(draws) <= tol, axis=1)))


def table(level=0.01) -> list[dict]:
    rows = []
    for name, (paths, shells, (rmin, rmax)) in cases().items():
        for kmax in (14.0, 16.0):
            for reading in ("max_chi", "edge_step"):
                eps = noise_sigma(paths, shells, level, kmin=3.0, kmax=kmax, reading=reading)
                for space in ("k", "r"):
                    b = bounds(paths, shells, eps=eps, kmin=3.0, kmax=kmax, space=space, rmin=rmin, rmax=rmax)
                    for kind in ("crb_k", "crb_fit", "ls_fit") if space == "r" else ("crb_k", "ls_fit"):
                        if space == "r" and kind == "crb_k":
                            continue
                        x = b[kind]
                        rows.append(
                            {
                                "case": name,
                                "k": f"3-{kmax:g}",
                                "reading": reading,
                                "eps": eps,
                                "space": space,
                                "kind": kind,
                                "n": x.n,
                                "r": x.r,
                                "sigma2": x.sigma2,
                                "de0": x.de0,
                            }
                        )
    return rows


def main() -> int:
    np.set_printoptions(precision=4)
    print("1 % noise, k weight 2, ΔE0 free, S0² = 1; 1σ per shell (shell 1; shell 2)")
    print(
        f"{'case':28s} {'k':5s} {'reading':9s} {'ε':>7s} {'sp':2s} {'bound':7s} "
        f"{'σ_N':>13s} {'σ_R Å':>15s} {'σ_σ² Å²':>17s} {'σ_ΔE0 eV':>8s}"
    )
    for x in table():
        print(
            f"{x['case']:28s} {x['k']:5s} {x['reading']:9s} {x['eps']:7.4f} {x['space']:2s} {x['kind']:7s} "
            f"{x['n'][0]:6.2f};{x['n'][1]:6.2f} {x['r'][0]:7.4f};{x['r'][1]:7.4f} "
            f"{x['sigma2'][0]:8.5f};{x['sigma2'][1]:8.5f} {x['de0']:8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
