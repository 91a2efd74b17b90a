"""The verdict on an adaptive scan's answer: every target identified, reached, and its local model adequate.
For K: P(K) reached with the best K converged and K + 1 fitted (:meth:`~.model_choice.KPosterior.why_not`).
For chi_noise: ε reached; warn when the scatter at high k exceeds the counting noise (ε is scaled up by it).

While the scan runs the same rules give ``warn`` (not there yet); once it has stopped, a target that was not
reached or not identified is ``bad``. A local polynomial that misses its points by more than their noise
(χ² above its ``adaptive_misfit_p`` quantile) is ``warn`` at any time: its sd is scaled up by the misfit, but
a model that does not follow the data can be biased by more than that. So is an E0 whose cubic a quintic over
the same window cannot confirm (no inflection point there: :func:`~.local._checked_e0`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2

from ..verdict import Verdict, threshold


def judge_agent(agent: Any, *, thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for the current answer of ``agent``, an :class:`~.design.AdaptiveXanes` (see the
    module docstring; typed loosely so that this module does not import the one that calls it)."""
    v = Verdict()
    _, sd = agent._estimates()
    done, _ = agent.done()
    flag = v.bad if done else v.warn
    for name, goal in agent.targets.items():
        if name == "K":
            kpost = agent.kpost
            if kpost is None:
                flag(f"K: {agent.k_error or 'no P(K) yet'}")
            elif not kpost.met(goal):
                flag(f"K: {kpost.why_not(goal)}")
            continue
        if name == "chi_noise":
            chi = agent.chi
            if chi is None:
                flag(f"chi_noise: {agent.chi_error or 'no estimate yet'}")
                continue
            if not chi.eps <= goal:
                flag(f"χ noise {chi.eps:.3g} above the target {goal:g}" if np.isfinite(chi.eps)
                     else "χ noise: not every high-k grid point measured")
            dof = chi.dof
            if np.isfinite(chi.scale) and dof and chi.scale > chi2.ppf(1.0 - threshold("adaptive_misfit_p", thresholds),
                                                                       dof) / dof:
                v.warn(f"χ at high k scatters {np.sqrt(chi.scale):.2f}x more than its counting noise: ε scaled up "
                       f"(glitches, harmonics or beam motion?)")
            continue
        if name in agent.ambiguous:
            places = " or ".join(f"{e:.1f} eV ({100 * p:.0f} %)" for e, p in agent.ambiguous[name])
            flag(f"{name} not identified: the noise moves it between {places}")
        elif name not in sd or not np.isfinite(sd[name]):
            flag(f"no estimate of {name} yet" if not done else f"no estimate of {name}")
        elif sd[name] > goal:
            flag(f"{name} sd {sd[name]:.2g} eV above the target {goal:g} eV")
        fit = agent.local.get(name)
        if fit is not None:
            if fit.model_note:  # E0's quintic check (local._checked_e0)
                v.warn(f"{name}: {fit.model_note}")
            dof = max(fit.n_points - fit.coef.size, 1)
            scale = agent.scale.get(name, 1.0)
            limit = chi2.ppf(1.0 - threshold("adaptive_misfit_p", thresholds), dof) / dof
            if scale > limit:
                v.warn(f"{name}: the local {fit.model} misses its {fit.n_points} points "
                       f"(χ²/dof {scale:.2f} > {limit:.2f}): the value may be biased beyond its sd")
    return v
