"""Run an agent against a known spectrum with counting-like noise: what tests and benchmarks do to check an
agent's answers against truth (no beamline, no RunEngine)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def run_simulated(agent: Any, mu_of: Callable[[np.ndarray], np.ndarray], noise_1s: float, rng: np.random.Generator,
                  *, batch: int = 5, told_sd: float | None = 1.0) -> dict[str, Any]:
    """Ask ``agent`` (tell/ask/report) for points until it stops, each measured as ``mu_of(energy)`` plus
    Gaussian noise of sd ``noise_1s`` / √dwell (μ units; dwell in s); returns its :meth:`report`.

    ``told_sd``: the noise sd told with each point, as a multiple of the true one (1: the counts are right;
    0.5: they claim half the real noise); None tells none (the agent estimates it from the data)."""
    while True:
        decision = agent.ask(batch)
        if not decision.energies:
            return agent.report()
        for energy, dwell in zip(decision.energies, decision.dwells):
            sd = noise_1s / np.sqrt(dwell)
            mu = float(np.asarray(mu_of(np.array([energy]))).ravel()[0]) + rng.normal(0, sd)
            agent.tell(energy, mu, dwell, None if told_sd is None else told_sd * sd)
