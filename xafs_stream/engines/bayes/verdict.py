"""The verdict on a Bayesian model selection: convergence, the exchange ladder, K at the edge of the searched
range, and undecided free energies."""

from __future__ import annotations

import math

from ..verdict import Verdict, threshold


def judge_selection(selection, rep, *, thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for a :class:`~.selection.Selection` and its :class:`~.summary.FitReport`.

    - R-hat of the chosen candidate: warn above ``rhat_warn`` (1.05), bad above ``rhat_bad`` (1.2);
    - the smallest neighbour exchange rate of its ladder below ``exchange_min`` (0.05): warn;
    - the chosen candidate the last of several (the top of the searched K range): warn, "extend the range";
    - the best two candidates closer than ``undecided_se`` (2) standard errors of their difference: warn.
    """
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    v = Verdict()
    rhat = rep.rhat_max
    if not math.isfinite(rhat) or rhat > t("rhat_bad"):
        v.bad(f"not converged: R-hat {rhat:.2f} above {t('rhat_bad'):g}")
    elif rhat > t("rhat_warn"):
        v.warn(f"R-hat {rhat:.3f} above {t('rhat_warn'):g}")
    if math.isfinite(rep.exchange_min) and rep.exchange_min < t("exchange_min"):
        v.warn(f"replica exchange rate {rep.exchange_min:.3f} below {t('exchange_min'):g}")
    fits = selection.fits
    if len(fits) > 1 and selection.best == len(fits) - 1:
        v.warn(f"{fits[-1].name} is the largest model searched: extend the range")
    info = getattr(selection, "run_length", {}) or {}
    if info.get("stopped") == "time budget spent":
        v.warn(f"run length: se(ΔF) {info['se_diff']:.2f} nat, drift {info['drift_diff']:+.2f} nat, above the "
               f"target {info['target_se']:g} when the time budget was spent")
    if len(fits) > 1:
        order = sorted(range(len(fits)), key=lambda i: fits[i].F)
        a, b = fits[order[0]], fits[order[1]]
        se = math.hypot(a.F_se, b.F_se)
        gap = b.F - a.F
        if math.isfinite(se) and gap < t("undecided_se") * se:
            v.warn(f"undecided: {a.name} vs {b.name}, ΔF = {gap:.2f} ± {se:.2f} nat")
    return v
