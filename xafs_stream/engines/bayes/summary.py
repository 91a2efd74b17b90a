"""Posterior summaries: per-parameter median and 68/95 % intervals, peak table, predictive band."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from .models.base import SpectrumModel

QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)


@dataclass
class Interval:
    """Median and central 68 % / 95 % intervals of one quantity.

    ``err`` is half the width of the 68 % interval (one standard deviation for a Gaussian posterior).
    """

    name: str
    median: float
    lo68: float
    hi68: float
    lo95: float
    hi95: float
    mean: float
    sd: float

    @property
    def err(self) -> float:
        return 0.5 * (self.hi68 - self.lo68)

    def as_dict(self) -> dict[str, float | str]:
        d = asdict(self)
        d["err"] = self.err
        return d


def interval(name: str, draws: np.ndarray) -> Interval:
    """Summarise 1-D draws."""
    draws = np.asarray(draws, float)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        raise InputError(f"no finite posterior draws for {name!r}")
    q = np.quantile(draws, QUANTILES)
    return Interval(
        name,
        float(q[2]),
        float(q[1]),
        float(q[3]),
        float(q[0]),
        float(q[4]),
        float(draws.mean()),
        float(draws.std()),
    )


def summarize_parameters(names: tuple[str, ...], samples: np.ndarray) -> list[Interval]:
    """One Interval per parameter from samples of shape (n, P)."""
    return [interval(n, samples[:, i]) for i, n in enumerate(names)]


@dataclass
class PeakSummary:
    """Posterior of one peak: centre, height, width (FWHM) and area, each an Interval (x / y units)."""

    index: int
    center: Interval
    height: Interval
    width: Interval
    area: Interval


def summarize_peaks(model: SpectrumModel, samples: np.ndarray) -> list[PeakSummary]:
    """Peak table from samples (n, P) using ``model.peak_table``."""
    rows = model.peak_table(samples)
    out = []
    for k, row in enumerate(rows, start=1):
        out.append(
            PeakSummary(k, *(interval(f"peak{k}.{q}", row[q]) for q in ("center", "height", "width", "area")))
        )
    return out


@dataclass
class Band:
    """Posterior band of the model curve and the posterior predictive band (with noise).

    Attributes
    ----------
    x : ndarray (N,)
    median, lo68, hi68, lo95, hi95 : ndarray (N,)  quantiles of f(x; w) over posterior draws
    pred_lo95, pred_hi95 : ndarray (N,)  95 % interval of new data y = f + noise
    best : ndarray (N,)  curve of the draw with the highest posterior density among the draws
    """

    x: np.ndarray
    median: np.ndarray
    lo68: np.ndarray
    hi68: np.ndarray
    lo95: np.ndarray
    hi95: np.ndarray
    pred_lo95: np.ndarray
    pred_hi95: np.ndarray
    best: np.ndarray


def predictive_band(
    model: SpectrumModel,
    samples: np.ndarray,
    y: np.ndarray,
    noise: float,
    rng: np.random.Generator,
    *,
    n_draws: int = 300,
) -> Band:
    """Quantile bands of f over up to ``n_draws`` posterior draws, and of f + N(0, noise²)."""
    samples = np.asarray(samples, float)
    take = (
        samples
        if samples.shape[0] <= n_draws
        else samples[rng.choice(samples.shape[0], n_draws, replace=False)]
    )
    f = model.predict(take)
    q = np.quantile(f, QUANTILES, axis=0)
    pred = f + noise * rng.standard_normal(f.shape)
    pq = np.quantile(pred, (0.025, 0.975), axis=0)
    resid = y[None, :] - model.predict(samples)
    log_post = -0.5 * np.einsum("ij,ij->i", resid, resid) / noise**2 + model.log_prior(samples)
    best = model.predict(samples[int(np.argmax(log_post))])
    return Band(model.x.copy(), q[2], q[1], q[3], q[0], q[4], pq[0], pq[1], best)


def thin_samples(samples: np.ndarray, max_samples: int) -> np.ndarray:
    """At most ``max_samples`` rows of ``samples``, evenly spaced (keeps the order)."""
    if samples.shape[0] <= max_samples:
        return samples
    idx = np.linspace(0, samples.shape[0] - 1, max_samples).round().astype(int)
    return samples[idx]


@dataclass
class FitReport:
    """Everything a caller prints or stores about a selection.

    Attributes
    ----------
    table : F table rows (name, F, F_se, noise, dF, probability), one per candidate
    chosen : name of the candidate with the lowest F
    noise : noise sd used (known) or estimated (auto), y units
    noise_mode : "known" or "auto"
    parameters : Interval per parameter of the chosen model
    peaks : PeakSummary per peak of the chosen model
    derived : Interval per derived quantity (FWHM, area, ...)
    band : model and predictive bands on the grid
    samples : thinned posterior samples (n, P) of the chosen model
    names : parameter names
    rhat_max : largest split-R-hat over parameters (independent chains)
    exchange_min : smallest neighbour exchange rate on the ladder
    acceptance : (min, max) Metropolis acceptance over rungs and parameters
    """

    table: list[dict]
    chosen: str
    noise: float
    noise_mode: str
    parameters: list[Interval]
    peaks: list[PeakSummary]
    derived: list[Interval]
    band: Band
    samples: np.ndarray
    names: tuple[str, ...]
    rhat_max: float
    exchange_min: float
    acceptance: tuple[float, float]


def report(selection, *, seed: int | None = 0, max_samples: int = 500) -> FitReport:
    """Summaries of the chosen candidate of a :class:`~.selection.Selection` (band draws use ``seed``)."""
    fit = selection.best_fit
    y = selection.y
    rng = np.random.default_rng(seed)
    samples = fit.samples()
    derived = fit.model.derived(samples)
    acc = fit.run.acceptance[1:]  # rung 0 is the prior
    return FitReport(
        table=selection.table(),
        chosen=fit.name,
        noise=fit.noise,
        noise_mode=selection.noise_mode,
        parameters=summarize_parameters(fit.model.names, samples),
        peaks=summarize_peaks(fit.model, samples),
        derived=[interval(k, v) for k, v in derived.items()],
        band=predictive_band(fit.model, samples, np.asarray(y, float), fit.noise, rng),
        samples=thin_samples(samples, max_samples),
        names=fit.model.names,
        rhat_max=fit.rhat_max,
        exchange_min=float(np.nanmin(fit.run.exchange_rate)),
        acceptance=(float(acc.min()), float(acc.max())),
    )
