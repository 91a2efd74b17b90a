"""The verdict on a Bayesian model selection: convergence, the exchange ladder, K at the edge of the searched
range, and undecided free energies."""

from __future__ import annotations

import math

import numpy as np

from ..verdict import Verdict, threshold


def judge_selection(selection, rep, *, thresholds: dict | None = None, ordered: bool = True) -> Verdict:
    """``ok``/``warn``/``bad`` for a :class:`~.selection.Selection` and its :class:`~.summary.FitReport`.

    - R-hat of the chosen candidate: warn above ``rhat_warn`` (1.05), bad above ``rhat_bad`` (1.2);
    - the smallest neighbour exchange rate of its ladder below ``exchange_min`` (0.05): warn;
    - the chosen candidate the last of several (the top of the searched K range): warn, "extend the range"
      (only for ``ordered`` candidates such as K = 1, 2, ...);
    - a search stopped at a candidate that did not converge (``select_models(stop_at_rhat=...)``): warn, naming
      it and the candidates not run;
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
    stopped = getattr(selection, "stopped_at", None)
    if stopped is not None:
        rest = getattr(selection, "not_run", [])
        among = fits[0].name if len(fits) == 1 else f"{fits[0].name}..{fits[-1].name}"
        v.warn(f"{stopped.name} did not converge (R-hat {stopped.rhat_max:.2f})"
               + (f", so {', '.join(rest)} not run" if rest else "") + f": chosen among {among} only")
    elif getattr(selection, "not_run", []):  # the first candidate did not converge: nothing else was run
        v.warn(f"{fits[0].name} did not converge, so {', '.join(selection.not_run)} not run")
    elif ordered and len(fits) > 1 and selection.best == len(fits) - 1:
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
        chosen = fits[selection.best]
        if selection.best != order[0]:
            se_c = math.hypot(chosen.F_se, a.F_se)
            lean = chosen.F - a.F
            note = (f"{chosen.name} kept (simpler): {a.name}'s F is lower by {lean:.2f} ± {se_c:.2f} nat, within "
                    f"the {getattr(selection, 'occam_nat', 1.0):g} nat parsimony margin")
            if math.isfinite(se_c) and lean > t("undecided_se") * se_c:
                v.warn(note)
            else:
                v.warn(f"undecided: {chosen.name} vs {a.name}, ΔF = {lean:.2f} ± {se_c:.2f} nat; {note}")
        elif math.isfinite(se) and gap < t("undecided_se") * se:
            v.warn(f"undecided: {a.name} vs {b.name}, ΔF = {gap:.2f} ± {se:.2f} nat")
    return v


def judge_cluster_scan(scan, rep, *, thresholds: dict | None = None) -> Verdict:
    """The verdict on a Δ-region scan (:class:`~.cluster_scan.ClusterScan`): the selection's rules (regions
    are not ordered like K), plus

    - F(Δ free) and -ln Σ (w_r/W) exp(-F_r) further apart than ``undecided_se`` (2) standard errors: warn,
      the sampler did not explore Δ the same way in both (a sign of poor mixing);
    - the chosen region at the end of the scanned range with the Δ posterior piled against that end (its
      2.5 % or 97.5 % quantile within 2 % of the range from it): warn, "extend the Δ range".
    """
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    v = judge_selection(scan.selection, rep, thresholds=thresholds, ordered=False)
    gap, se = scan.consistency()
    if math.isfinite(se) and abs(gap) > t("undecided_se") * se:
        v.warn(f"F(Δ free) differs from the regions' combined F by {gap:+.2f} ± {se:.2f} nat: poor mixing")
    lo, hi = scan.regions[0][0], scan.regions[-1][1]
    q = np.quantile(scan.delta_posterior(), [0.025, 0.975])
    near = 0.02 * (hi - lo)
    best = scan.selection.best
    if (best == 0 and q[0] - lo < near) or (best == len(scan.regions) - 1 and hi - q[1] < near):
        v.warn(f"the Δ posterior reaches the end of the scanned range {lo:g}..{hi:g} eV: extend the Δ range")
    return v


def judge_preedge(preedge, verdict: Verdict, *, thresholds: dict | None = None) -> None:
    """Add the pre-edge centroid's own convergence to ``verdict``: its split-R-hat over the fit's independent
    chains (:attr:`~.workflows.PreedgeResult.centroid_rhat`) above ``rhat_bad``: bad; above ``rhat_warn``:
    warn. The edge's foot under the pre-edge peaks is a nuisance and is not judged."""
    rhat = preedge.centroid_rhat
    if not math.isfinite(rhat) or rhat > threshold("rhat_bad", thresholds):
        verdict.bad(f"pre-edge centroid not converged: R-hat {rhat:.2f} above {threshold('rhat_bad', thresholds):g}")
    elif rhat > threshold("rhat_warn", thresholds):
        verdict.warn(f"pre-edge centroid: R-hat {rhat:.3f} above {threshold('rhat_warn', thresholds):g}")
