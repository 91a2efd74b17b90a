"""Prior distributions for one scalar parameter: log density, sampling, quantile function.

The log densities are closed-form numpy expressions: the sampler evaluates one prior for all replicas
once per parameter per sweep, and a frozen ``scipy.stats`` distribution costs ~30-60 µs per call in
overhead alone (see docs/measurements.md), more than the numpy expression itself.
Quantiles (used to map the unit cube for nested-sampling cross-checks) go through scipy.special.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..errors import InputError


def _finite(name: str, **values: float) -> None:
    for key, value in values.items():
        if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(float(value)):
            raise InputError(f"prior {name}: {key} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Normal:
    """Normal prior N(mean, sd²)."""

    mean: float
    sd: float

    def __post_init__(self) -> None:
        _finite("Normal", mean=self.mean, sd=self.sd)
        if self.sd <= 0:
            raise InputError(f"prior Normal: sd must be > 0 (no support otherwise), got {self.sd!r}")

    positive = False

    @property
    def support(self) -> tuple[float, float]:
        return (-math.inf, math.inf)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.sd
        return -0.5 * z * z - math.log(self.sd) - 0.5 * math.log(2 * math.pi)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.normal(self.mean, self.sd, size)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return self.mean + self.sd * special.ndtri(u)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        return special.ndtr((np.asarray(x, float) - self.mean) / self.sd)


@dataclass(frozen=True)
class Gamma:
    """Gamma prior with shape k and rate r (mean k/r), as in Nagata et al. 2012."""

    shape: float
    rate: float

    def __post_init__(self) -> None:
        _finite("Gamma", shape=self.shape, rate=self.rate)
        if self.shape <= 0 or self.rate <= 0:
            raise InputError(
                f"prior Gamma: shape and rate must be > 0, got shape={self.shape!r} rate={self.rate!r}"
            )

    positive = True

    @property
    def support(self) -> tuple[float, float]:
        return (0.0, math.inf)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (
                self.shape * math.log(self.rate)
                - special.gammaln(self.shape)
                + (self.shape - 1) * np.log(x)
                - self.rate * x
            )
        return np.where(x > 0, out, -np.inf)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.gamma(self.shape, 1.0 / self.rate, size)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return special.gammaincinv(self.shape, u) / self.rate

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        return special.gammainc(self.shape, np.maximum(np.asarray(x, float), 0.0) * self.rate)


@dataclass(frozen=True)
class Uniform:
    """Uniform prior on [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _finite("Uniform", low=self.low, high=self.high)
        if not self.high > self.low:
            raise InputError(
                f"prior Uniform: need low < high (no support otherwise), got [{self.low}, {self.high}]"
            )

    positive = False

    @property
    def support(self) -> tuple[float, float]:
        return (float(self.low), float(self.high))

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        inside = (x >= self.low) & (x <= self.high)
        return np.where(inside, -math.log(self.high - self.low), -np.inf)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return self.low + (self.high - self.low) * np.asarray(u, float)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        return np.clip((np.asarray(x, float) - self.low) / (self.high - self.low), 0.0, 1.0)


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform (scale-invariant) prior on [low, high], low > 0."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _finite("LogUniform", low=self.low, high=self.high)
        if not (self.low > 0 and self.high > self.low):
            raise InputError(
                f"prior LogUniform: need 0 < low < high (no support otherwise), got [{self.low}, {self.high}]"
            )

    positive = True

    @property
    def support(self) -> tuple[float, float]:
        return (float(self.low), float(self.high))

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        inside = (x >= self.low) & (x <= self.high)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = -np.log(x) - math.log(math.log(self.high / self.low))
        return np.where(inside, out, -np.inf)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), size))

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return self.low * (self.high / self.low) ** np.asarray(u, float)

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.log(np.asarray(x, float) / self.low) / math.log(self.high / self.low)
        return np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0)


Prior = Normal | Gamma | Uniform | LogUniform
PRIOR_TYPES = (Normal, Gamma, Uniform, LogUniform)


def check_prior(name: str, prior: object) -> Prior:
    """Raise InputError unless ``prior`` is one of the prior classes here."""
    if not isinstance(prior, PRIOR_TYPES):
        kinds = ", ".join(t.__name__ for t in PRIOR_TYPES)
        raise InputError(f"prior for {name!r} must be one of {kinds}, got {type(prior).__name__}")
    return prior


def mass_in(prior: Prior, low: float, high: float) -> float:
    """Prior probability of the interval [low, high]."""
    return float(prior.cdf(high) - prior.cdf(low))
