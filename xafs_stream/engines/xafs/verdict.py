"""The verdict on a processed spectrum: edge significance, post-edge points, glitches, k range."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..verdict import Verdict, threshold
from .deglitch import deglitch
from .process import ProcessedSpectrum


def glitches_left(proc: ProcessedSpectrum, *, thresholds: dict | None = None) -> int:
    """Glitches in the measured μ(E) that deglitching would replace and that leave μ by more than
    ``glitch_size`` of the edge step (0 when deglitching ran, or when it cannot run on this spectrum)."""
    if proc.glitch is not None:
        return 0
    try:
        found = deglitch(proc.energy, proc.mu, e0=float(proc.e0))
    except InputError:
        return 0
    size = np.abs(np.asarray(proc.mu) - np.asarray(found.mu)) / max(abs(float(proc.edge_step)), 1e-300)
    return int(np.count_nonzero(size[found.indices[0]] > threshold("glitch_size", thresholds)))


def judge_processing(proc: ProcessedSpectrum, *, n_glitches: int | None = None, energy_guessed: str = "",
                     thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for one processed spectrum.

    n_glitches : glitches found and left in μ (None: counted from ``proc.glitch`` when deglitching ran)
    energy_guessed : how the energy column was chosen when the file did not say (empty when it did)
    thresholds : overrides of :data:`xafs_stream.engines.verdict.THRESHOLDS`
    """
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    v = Verdict()
    if energy_guessed:
        v.warn(f"energy column guessed: {energy_guessed}")
    step, snr = float(proc.edge_step), proc.edge_snr
    if snr < t("edge_snr_bad"):
        v.bad(f"edge step {step:.3g} is only {snr:.1f}x its error")
    elif snr < t("edge_snr_warn"):
        v.warn(f"edge step {step:.3g} is only {snr:.1f}x its error")
    used = proc.pre.params_used
    e = np.asarray(proc.energy, float) - float(proc.e0)
    n_post = int(np.count_nonzero((e >= float(used["norm1"])) & (e <= float(used["norm2"]))))
    if n_post < t("min_post_edge_points"):
        v.bad(f"{n_post} post-edge point(s) for the normalisation (fewer than {t('min_post_edge_points'):g})")
    if n_glitches is None and proc.glitch is not None:
        n_glitches = 0  # deglitching replaced them
    if n_glitches:
        if n_glitches >= t("glitches_bad"):
            v.bad(f"{n_glitches} glitches left in μ(E)")
        elif n_glitches >= t("glitches_warn"):
            v.warn(f"{n_glitches} glitch(es) left in μ(E)")
    if proc.has_exafs:
        _judge_k_range(v, proc, t)
    return v


def _judge_k_range(v: Verdict, proc, t) -> None:
    dk = float(proc.kmax) - float(proc.kmin)
    if dk < t("k_range_bad"):
        v.bad(f"FT k range {proc.kmin:g}-{proc.kmax:g} Å⁻¹ is only {dk:.1f} Å⁻¹ long")
    elif dk < t("k_range_warn"):
        v.warn(f"FT k range {proc.kmin:g}-{proc.kmax:g} Å⁻¹ is shorter than {t('k_range_warn'):g} Å⁻¹")


def judge_chi(proc, *, thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for a χ(k) input (:class:`~.process.ProcessedChi`): its FT k range."""
    v = Verdict()
    _judge_k_range(v, proc, lambda name: threshold(name, thresholds))
    return v
