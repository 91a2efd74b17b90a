"""Non-negative LASSO: a warm-started path over the regularisation and its cross-validation.

Problem, for a dictionary X (n_out, n_atoms) and data y (n_out,)::

    minimise  1/(2 n_out) ||y - X c||² + α Σ c_j    subject to  c ≥ 0

(the scaling of scikit-learn's ``Lasso``, so α values compare with ``LassoCV(positive=True)``).

Solver: working sets. For each α (largest first, warm-started from the previous solution) the problem is
solved exactly on a small working set by an active-set (Lawson-Hanson) quadratic solver on the working
set's Gram matrix; the full gradient then checks the KKT conditions and the worst violators join the set.
Only the working set's Gram matrix is ever formed, so dictionaries of 10⁴ columns are cheap.
Why not scikit-learn or scipy: engines are numpy/scipy only, and scipy's ``nnls`` has neither a Gram form
nor a warm start; in ``benchmarks/bench_spm.py`` this solver runs the same CV path several times
faster than ``LassoCV(positive=True)`` on the same dictionary, with the same selected atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LassoPath:
    """Solutions along a decreasing α grid.

    Attributes
    ----------
    alphas : ndarray of shape (n_alphas,), decreasing
    coefs : ndarray of shape (n_alphas, n_atoms), non-negative
    n_iter : total working-set iterations
    """

    alphas: np.ndarray
    coefs: np.ndarray
    n_iter: int


@dataclass
class LassoCV:
    """Cross-validated choice of α.

    Attributes
    ----------
    alphas : ndarray of shape (n_alphas,), decreasing
    cv_mean, cv_se : ndarray of shape (n_alphas,): mean held-out error and its standard error
    cv_folds : ndarray of shape (n_folds, n_alphas): held-out error per fold
    alpha : the chosen α
    index : index of the chosen α in ``alphas``
    rule : "min" (smallest mean error) or "1se" (largest α within one standard error of the minimum)
    coef : ndarray of shape (n_atoms,): full-data solution at the chosen α
    path : the full-data path from the largest α down to the chosen one
    """

    alphas: np.ndarray
    cv_mean: np.ndarray
    cv_se: np.ndarray
    cv_folds: np.ndarray
    alpha: float
    index: int
    rule: str
    coef: np.ndarray
    path: LassoPath


def _solve_pd(q: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Solve q z = h for a small symmetric PSD q; a tiny ridge handles near-duplicate columns."""
    ridge = 1.0e-11 * (np.trace(q) / max(len(h), 1) + 1.0e-300)
    try:
        return np.linalg.solve(q + ridge * np.eye(len(h)), h)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(q, h, rcond=None)[0]


def nnqp(
    q: np.ndarray, h: np.ndarray, x0: np.ndarray | None = None, *, tol: float = 1e-12, max_iter: int = 500
) -> np.ndarray:
    """Minimise ½ xᵀ q x - hᵀ x subject to x ≥ 0 (Lawson-Hanson active set on the Gram matrix).

    ``q`` is (m, m) symmetric positive semi-definite, ``h`` (m,); ``x0`` a feasible warm start.
    """
    m = len(h)
    x = np.zeros(m) if x0 is None else np.maximum(np.asarray(x0, dtype=float), 0.0)
    passive = x > 0

    def inner(passive: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(max_iter):
            idx = np.nonzero(passive)[0]
            z = np.zeros(m)
            if idx.size:
                z[idx] = _solve_pd(q[np.ix_(idx, idx)], h[idx])
            if np.all(z[idx] > 0):
                return z, passive
            neg = idx[z[idx] <= 0]
            step = np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-300))
            x = x + step * (z - x)
            passive = passive & (x > 1e-14)
            x[~passive] = 0.0
            if step <= 0 and not np.any(passive[neg]):
                continue
        return np.maximum(x, 0.0), passive

    if passive.any():
        x, passive = inner(passive, x)
    for _ in range(max_iter):
        w = h - q @ x
        cand = (~passive) & (w > tol)
        if not cand.any():
            break
        j = int(np.argmax(np.where(cand, w, -np.inf)))
        passive = passive.copy()
        passive[j] = True
        x, passive = inner(passive, x)
    return x


def alpha_max(x: np.ndarray, y: np.ndarray) -> float:
    """Smallest α whose solution is all zero: max_j (Xᵀy)_j / n_out (0 if no column correlates positively)."""
    return max(float(np.max(x.T @ y)) / x.shape[0], 0.0)


def alpha_grid(x: np.ndarray, y: np.ndarray, n_alphas: int = 40, eps: float = 1e-3) -> np.ndarray:
    """Geometric α grid from ``alpha_max`` down to ``eps·alpha_max``."""
    return alpha_grid_from(x, y, x.shape[0], n_alphas, eps)


def alpha_grid_from(x: np.ndarray, y: np.ndarray, n_out: int, n_alphas: int, eps: float) -> np.ndarray:
    """α grid for a (possibly compressed) problem whose loss is normalised by ``n_out``."""
    amax = max(float(np.max(x.T @ y)) / n_out, 0.0)
    if amax <= 0:
        return np.zeros(1)
    return amax * np.logspace(0.0, np.log10(eps), n_alphas)


def nn_lasso_path(
    x: np.ndarray,
    y: np.ndarray,
    alphas: np.ndarray,
    *,
    coef0: np.ndarray | None = None,
    tol: float = 1e-7,
    max_iter: int = 200,
    n_out: int | None = None,
) -> LassoPath:
    """Non-negative LASSO solutions for each α of a decreasing grid, warm-started along the path.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_atoms)
    y : ndarray of shape (n_rows,)
    alphas : ndarray of shape (n_alphas,), decreasing, ≥ 0
    coef0 : optional warm start for the first α
    tol : KKT tolerance, relative to the largest |Xᵀy|/n_out
    n_out : the normalisation n in 1/(2n)||y - Xc||² (default: rows of x; give the original row count
        when x, y are a compressed form QᵀX, Qᵀy of a taller problem)
    """
    n = x.shape[0] if n_out is None else n_out
    n_atoms = x.shape[1]
    x = np.ascontiguousarray(x)
    xty = (x.T @ y) / n
    scale = max(float(np.max(np.abs(xty))), 1e-300)
    kkt_tol = tol * scale
    coef = np.zeros(n_atoms) if coef0 is None else np.maximum(coef0, 0.0).astype(float)
    coefs = np.zeros((len(alphas), n_atoms))
    total = 0
    for ia, alpha in enumerate(alphas):
        work = np.nonzero(coef > 0)[0]
        for _ in range(max_iter):
            total += 1
            if work.size:
                xw = x[:, work]
                sol = nnqp((xw.T @ xw) / n, xty[work] - alpha, coef[work], tol=kkt_tol * 1e-3)
                coef[:] = 0.0
                coef[work] = sol
                keep = sol > 0
                work = work[keep]
                grad = (x.T @ (xw[:, keep] @ sol[keep])) / n - xty + alpha
            else:
                coef[:] = 0.0
                grad = alpha - xty
            grad[work] = 0.0
            viol = np.nonzero(grad < -kkt_tol)[0]
            if viol.size == 0:
                break
            n_add = max(10, work.size)
            work = np.union1d(work, viol[np.argsort(grad[viol])[:n_add]])
        coefs[ia] = coef
    return LassoPath(alphas=np.asarray(alphas, dtype=float), coefs=coefs, n_iter=total)


def compress_columns(a: np.ndarray, rtol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Low-rank factor a ≈ U W with orthonormal U (n, r), W = Uᵀa (r, m), dropping singular values < rtol·s₀.

    From the eigen-decomposition of a aᵀ (n ≤ a few hundred k points, m up to 10⁴ atoms), so the cost is
    one pass over ``a``. EXAFS dictionaries are band-limited: r is a few tens for thousands of columns.
    """
    evals, evecs = np.linalg.eigh(a @ a.T)
    keep = evals > (rtol**2) * max(float(evals[-1]), 1e-300)
    u = evecs[:, keep][:, ::-1]
    return u, u.T @ a


def interleaved_folds(n_points: int, n_folds: int) -> np.ndarray:
    """Fold label per point: point i goes to fold i mod n_folds (every n_folds-th k point held out)."""
    return np.arange(n_points) % n_folds


def nn_lasso_cv(
    atoms: np.ndarray,
    data: np.ndarray,
    weight: np.ndarray,
    *,
    ft: np.ndarray | None = None,
    n_folds: int = 5,
    n_alphas: int = 40,
    eps: float = 1e-3,
    rule: str = "1se",
    tol: float = 1e-7,
) -> LassoCV:
    """Choose α by k-fold cross-validation over k points, then solve on all points.

    The fitted vector is ``weight·data`` (k space, ``ft`` None) or ``ft @ (weight·data)`` (R space) with the
    dictionary mapped the same way. Fold f holds out the k points i with i mod n_folds = f (interleaved, so
    held-out points sample the whole k range and, in R space, alias only beyond π/(n_folds·δk)). In R space
    the training transform uses the kept points scaled by n_k/n_kept (an unbiased estimate of the full
    transform) and the held-out error is the held-out residual transformed the same way.

    The weighted dictionary is factored once as U W (:func:`compress_columns`); every fold is then solved
    on an r-row problem (r ≈ rank, a few tens) that has the same solutions as the full one.

    Parameters
    ----------
    atoms : ndarray of shape (n_k, n_atoms), χ per column on the fit grid
    data : ndarray of shape (n_k,)
    weight : ndarray of shape (n_k,), k^w (times the window in R space)
    ft : ndarray of shape (n_out, n_k) or None: the unweighted transform rows (R space)
    rule : "1se" (default) or "min"
    """
    if rule not in ("1se", "min"):
        raise ValueError(f"rule must be '1se' or 'min', got {rule!r}")
    n_k = atoms.shape[0]
    yw = weight * data
    u, w = compress_columns(weight[:, None] * atoms)

    def reduced(sel: np.ndarray | None, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
        """Compressed (x, y, n) of the problem restricted to k points ``sel`` (None: all)."""
        if ft is None:
            b = u if sel is None else u[sel]
            yy = yw if sel is None else yw[sel]
            n = b.shape[0]
        else:
            g = ft if sel is None else ft[:, sel] * scale
            b = g @ (u if sel is None else u[sel])
            yy = g @ (yw if sel is None else yw[sel])
            n = ft.shape[0]
        q, r = np.linalg.qr(b)
        resid_sq = float(yy @ yy - (q.T @ yy) @ (q.T @ yy))
        return r @ w, q.T @ yy, n, resid_sq

    x_full, y_full, n_full, _ = reduced(None)
    alphas = alpha_grid_from(x_full, y_full, n_full, n_alphas, eps)
    folds = interleaved_folds(n_k, n_folds)
    errors = np.zeros((n_folds, len(alphas)))
    for f in range(n_folds):
        test = folds == f
        train = ~test
        x_tr, y_tr, n_tr, _ = reduced(train, n_k / train.sum())
        path = nn_lasso_path(x_tr, y_tr, alphas, tol=tol, n_out=n_tr)
        pred = u[test] @ (w @ path.coefs.T)  # (n_test, n_alphas), weighted χ
        resid = yw[test][:, None] - pred
        if ft is not None:
            resid = (ft[:, test] * (n_k / test.sum())) @ resid
        errors[f] = np.mean(resid**2, axis=0)
    mean = errors.mean(axis=0)
    se = errors.std(axis=0, ddof=1) / np.sqrt(n_folds)
    best = int(np.argmin(mean))
    if rule == "1se":
        index = int(np.nonzero(mean <= mean[best] + se[best])[0].min())  # alphas decrease: largest α
    else:
        index = best
    path = nn_lasso_path(x_full, y_full, alphas[: index + 1], tol=tol, n_out=n_full)
    return LassoCV(
        alphas=alphas,
        cv_mean=mean,
        cv_se=se,
        cv_folds=errors,
        alpha=float(alphas[index]),
        index=index,
        rule=rule,
        coef=path.coefs[-1].copy(),
        path=path,
    )
