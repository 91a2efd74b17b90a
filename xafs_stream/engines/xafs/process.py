"""One call from μ(E) to χ(R): pre-edge normalisation, AUTOBK, forward Fourier transform and χ noise."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..errors import InputError
from .autobk import AutobkResult, autobk
from .deglitch import deglitch as deglitch_spectrum
from .kspace import ETOK
from .noise import NoiseResult, estimate_chi_noise
from .normalize import PreEdgeResult, pre_edge
from .xft import FTResult, xftf

_PRE_KEYS = ("pre1", "pre2", "norm1", "norm2", "nnorm", "npre", "smooth_ev", "min_edge_snr")
_BKG_KEYS = {"rbkg": "rbkg", "bkg_kweight": "kweight", "bkg_kmin": "kmin", "bkg_kmax": "kmax", "bkg_dk": "dk",
             "nknots": "nknots", "nclamp": "nclamp", "clamp_lo": "clamp_lo", "clamp_hi": "clamp_hi"}
_FT_KEYS = ("kmin", "kweight", "dk", "dk2", "window", "rmax_out")
MIN_EXAFS_K = 3.0  # Å⁻¹ of data above E0 needed before χ(k) is attempted


@dataclass(frozen=True)
class ProcessSettings:
    """Every setting of the μ(E) → χ(R) chain, with its default. One object for the live service
    (``[analysis."xafs.normalize"]``), ``reprocess`` and ``xafs-stream analyze`` (one option per field).

    Pre-edge (eV relative to E0; None: found from the data): ``e0`` (eV, absolute), ``pre1``, ``pre2``,
    ``norm1``, ``norm2``, ``nnorm``, ``npre``, ``smooth_ev``, ``min_edge_snr``. Deglitching: ``deglitch``
    (single-point glitches replaced by interpolation before processing). AUTOBK: ``rbkg`` (Å),
    ``bkg_kweight``, ``bkg_kmin``, ``bkg_kmax``, ``bkg_dk`` (Å⁻¹), ``nknots``, ``nclamp``, ``clamp_lo``,
    ``clamp_hi``. Forward FT: ``kmin``, ``kmax`` (Å⁻¹; None: 1 Å⁻¹ below the end of χ(k), rounded down to
    0.5), ``kweight``, ``dk``, ``dk2`` (Å⁻¹), ``window``, ``rmax_out`` (Å).
    """

    e0: float | None = None
    pre1: float | None = None
    pre2: float | None = None
    norm1: float | None = None
    norm2: float | None = None
    nnorm: int | None = None
    npre: int = 1
    smooth_ev: float | None = None
    min_edge_snr: float = 3.0
    deglitch: bool = False
    rbkg: float = 1.0
    bkg_kweight: float = 2.0
    bkg_kmin: float = 0.0
    bkg_kmax: float | None = None
    bkg_dk: float = 0.1
    nknots: int | None = None
    nclamp: int = 3
    clamp_lo: float = 0.0
    clamp_hi: float = 1.0
    kmin: float = 3.0
    kmax: float | None = None
    kweight: float = 2.0
    dk: float = 1.0
    dk2: float | None = None
    window: str = "hanning"
    rmax_out: float = 10.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> "ProcessSettings":
        """Settings from a config table or CLI options; unknown names (other than ``ignore``) and values of
        the wrong type are an InputError naming them."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known) - set(ignore))
        if unknown:
            raise InputError(f"unknown processing setting(s) {unknown}; known: {sorted(known)}")
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known or value is None:
                continue
            kind = known[name].type
            try:
                if "bool" in kind:
                    if not isinstance(value, (bool, np.bool_)):
                        raise TypeError
                    out[name] = bool(value)
                elif "str" in kind:
                    out[name] = str(value)
                elif "int" in kind:
                    if isinstance(value, bool) or float(value) != int(value):
                        raise TypeError
                    out[name] = int(value)
                else:
                    if isinstance(value, bool):
                        raise TypeError
                    out[name] = float(value)
                    if not np.isfinite(out[name]):
                        raise TypeError
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"{name}: expected {kind.replace(' | None', '')}, got {value!r}") from None
        return cls(**out)


@dataclass
class ProcessedSpectrum:
    """Everything from :func:`process_spectrum` for one spectrum.

    Attributes
    ----------
    energy, mu : the input, eV
    e0 : eV; edge_step : in units of μ
    norm, flat, pre_edge_line, post_edge_curve, bkg : ndarrays of shape (n,) on the energy grid
    k : ndarray of shape (n_k,), Å⁻¹ (uniform, 0.05); chi : χ(k), same shape
    r : ndarray of shape (n_r,), Å; chir : complex χ(R) (k-weighted); chir_mag / chir_re / chir_im
    noise_chi : ε_k, noise of χ(k); noise_chir : ε_R; kmax_suggest : Å⁻¹
    kmin, kmax : the FT window range used, Å⁻¹
    params_used : {"pre_edge": ..., "autobk": ..., "xftf": ..., "noise": ...}
    pre, bkg_result, ft, noise : the step results (the last three None for a XANES-only spectrum)
    settings : the :class:`ProcessSettings` used
    k_data : how far the data reach above E0, Å⁻¹
    glitch : boolean mask of the points replaced by deglitching (None without deglitching)
    mu_used : μ after deglitching (the input μ without it)
    exafs_note : why there is no χ(k), "" when there is
    """

    energy: np.ndarray
    mu: np.ndarray
    pre: PreEdgeResult
    bkg_result: AutobkResult | None
    ft: FTResult | None
    noise: NoiseResult | None
    settings: ProcessSettings = field(default_factory=ProcessSettings)
    k_data: float = float("nan")
    glitch: np.ndarray | None = None
    mu_used: np.ndarray | None = None
    exafs_note: str = ""

    @property
    def has_exafs(self) -> bool:
        return self.bkg_result is not None

    @property
    def e0(self) -> float:
        return self.pre.e0

    @property
    def edge_step(self) -> float:
        return self.pre.edge_step

    @property
    def edge_snr(self) -> float:
        """Edge step over its standard error (inf when the error is zero or unknown)."""
        err = float(self.pre.edge_step_err)
        return float(self.pre.edge_step) / err if err > 0 and np.isfinite(err) else float("inf")

    @property
    def norm(self) -> np.ndarray:
        return self.pre.norm

    @property
    def flat(self) -> np.ndarray:
        return self.pre.flat

    @property
    def pre_edge_line(self) -> np.ndarray:
        return self.pre.pre_edge_line

    @property
    def post_edge_curve(self) -> np.ndarray:
        return self.pre.post_edge_curve

    @property
    def bkg(self) -> np.ndarray:
        return self.bkg_result.bkg

    @property
    def k(self) -> np.ndarray:
        return self.bkg_result.k

    @property
    def chi(self) -> np.ndarray:
        return self.bkg_result.chi

    @property
    def r(self) -> np.ndarray:
        return self.ft.r

    @property
    def chir(self) -> np.ndarray:
        return self.ft.chir

    @property
    def chir_mag(self) -> np.ndarray:
        return self.ft.chir_mag

    @property
    def chir_re(self) -> np.ndarray:
        return self.ft.chir_re

    @property
    def chir_im(self) -> np.ndarray:
        return self.ft.chir_im

    @property
    def noise_chi(self) -> float:
        return self.noise.epsilon_k

    @property
    def noise_chir(self) -> float:
        return self.noise.epsilon_r

    @property
    def kmax_suggest(self) -> float:
        return self.noise.kmax_suggest

    @property
    def kmin(self) -> float:
        return self.ft.params_used["kmin"]

    @property
    def kmax(self) -> float:
        return self.ft.params_used["kmax"]

    @property
    def params_used(self) -> dict:
        out = {"settings": asdict(self.settings), "pre_edge": self.pre.params_used}
        if self.has_exafs:
            out.update(autobk=self.bkg_result.params_used, xftf=self.ft.params_used, noise=self.noise.params_used)
        return out


def default_ft_kmax(k_last: float) -> float:
    """Default upper end of the FT window: 1 Å⁻¹ below the end of the data, rounded down to 0.5 Å⁻¹."""
    return float(np.floor(2.0 * (k_last - 1.0)) / 2.0)


def process(energy: np.ndarray, mu: np.ndarray, settings: ProcessSettings | None = None) -> ProcessedSpectrum:
    """The one μ(E) → χ(R) chain: optional deglitching, :func:`pre_edge`, then, when the data reach far
    enough above E0 (``kmin`` + 2 Å⁻¹, at least 3 Å⁻¹), :func:`autobk`, :func:`xftf` and
    :func:`estimate_chi_noise`. A XANES-only spectrum gets its normalisation with ``has_exafs`` false.

    ``energy`` (n,) eV, ``mu`` (n,); ``settings`` default :class:`ProcessSettings()`. Raises InputError for
    bad input or a spectrum that cannot be processed (no edge, too short, an empty FT range, ...)."""
    s = settings or ProcessSettings()
    if np.ndim(mu) != 1:
        raise InputError(f"mu: one spectrum (1-D) at a time, got shape {np.shape(mu)}")
    mu_in = np.asarray(mu, dtype=float)
    mu_used, glitch = mu_in, None
    if s.deglitch:
        dg = deglitch_spectrum(energy, mu_in, e0=s.e0)
        mu_used, glitch = np.asarray(dg.mu), np.asarray(dg.glitch)
    pre_kw = {k: getattr(s, k) for k in _PRE_KEYS}
    pre = pre_edge(energy, mu_used, e0=s.e0, **{k: v for k, v in pre_kw.items() if v is not None})
    k_data = float(np.sqrt(max(float(pre.energy[-1]) - float(pre.e0), 0.0) * ETOK))
    need = max(MIN_EXAFS_K, s.kmin + 2.0)
    base = dict(energy=pre.energy, mu=mu_in, pre=pre, settings=s, k_data=k_data, glitch=glitch, mu_used=mu_used)
    if k_data < need:
        note = f"data reach only k = {k_data:.2f} Å⁻¹ above E0; χ(k) needs at least {need:g}"
        return ProcessedSpectrum(bkg_result=None, ft=None, noise=None, exafs_note=note, **base)
    bkg_kw = {_BKG_KEYS[k]: getattr(s, k) for k in _BKG_KEYS if getattr(s, k) is not None}
    bkg = autobk(pre.energy, mu_used, e0=pre.e0, edge_step=pre.edge_step, **bkg_kw)
    k_last = float(bkg.k[-1])
    kmax_ft = default_ft_kmax(k_last) if s.kmax is None else float(s.kmax)
    if not s.kmin < kmax_ft:
        raise InputError(
            f"kmin, kmax: the FT range {s.kmin:g} .. {kmax_ft:g} Å⁻¹ is empty (χ(k) ends at {k_last:.2f} Å⁻¹)"
        )
    ft_kw = {k: getattr(s, k) for k in _FT_KEYS if getattr(s, k) is not None}
    ft = xftf(bkg.k, bkg.chi, **{**ft_kw, "kmax": kmax_ft})
    noise = estimate_chi_noise(bkg.k, bkg.chi)
    return ProcessedSpectrum(bkg_result=bkg, ft=ft, noise=noise, **base)


def process_spectrum(
    energy: np.ndarray,
    mu: np.ndarray,
    settings: ProcessSettings | None = None,
    **params: Any,
) -> ProcessedSpectrum:
    """:func:`process` for a spectrum that must have χ(k): ``settings`` or keyword settings (the fields of
    :class:`ProcessSettings`, e.g. ``kmin=3, kmax=15, rbkg=1.1``). InputError when it has no EXAFS."""
    s = ProcessSettings.from_mapping(params) if settings is None else replace(settings, **params)
    out = process(energy, mu, s)
    if not out.has_exafs:
        raise InputError(out.exafs_note)
    return out


@dataclass
class ProcessedChi:
    """The FT part of the chain for a χ(k) input (a χ(k) file: no μ(E), no E0).

    k : ndarray (n_k,) Å⁻¹, uniform 0.05 from 0 (the input interpolated, zero below its first k);
    chi : χ(k) on it; ft, noise : as in :class:`ProcessedSpectrum`; k_data : last k of the input, Å⁻¹.
    """

    k: np.ndarray
    chi: np.ndarray
    ft: FTResult
    noise: NoiseResult
    k_data: float
    settings: ProcessSettings = field(default_factory=ProcessSettings)

    noise_chi = property(lambda self: self.noise.epsilon_k)
    noise_chir = property(lambda self: self.noise.epsilon_r)
    kmax_suggest = property(lambda self: self.noise.kmax_suggest)
    kmin = property(lambda self: self.ft.params_used["kmin"])
    kmax = property(lambda self: self.ft.params_used["kmax"])


def process_chi(k: np.ndarray, chi: np.ndarray, settings: ProcessSettings | None = None) -> ProcessedChi:
    """The FT and noise steps of :func:`process` for χ(k) given directly (k in Å⁻¹, increasing)."""
    s = settings or ProcessSettings()
    k = np.asarray(k, float)
    chi = np.asarray(chi, float)
    if k.ndim != 1 or k.shape != chi.shape or k.size < 10:
        raise InputError(f"k, chi: need two 1-D arrays of the same length (>= 10), got {k.shape} and {chi.shape}")
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(chi))):
        raise InputError("k, chi: NaN or inf values")
    if np.any(np.diff(k) <= 0) or k[0] < 0:
        raise InputError("k: must be >= 0 and strictly increasing")
    grid = np.arange(0.0, float(k[-1]) + 1e-9, 0.05)
    chi_u = np.where(grid >= k[0], np.interp(grid, k, chi), 0.0)
    kmax_ft = default_ft_kmax(float(k[-1])) if s.kmax is None else float(s.kmax)
    if not max(s.kmin, float(k[0])) < kmax_ft:
        raise InputError(f"kmin, kmax: the FT range {s.kmin:g} .. {kmax_ft:g} Å⁻¹ is empty "
                         f"(χ(k) spans {k[0]:.2f} .. {k[-1]:.2f} Å⁻¹)")
    ft_kw = {key: getattr(s, key) for key in _FT_KEYS if getattr(s, key) is not None}
    ft = xftf(grid, chi_u, **{**ft_kw, "kmax": kmax_ft})
    return ProcessedChi(k=grid, chi=chi_u, ft=ft, noise=estimate_chi_noise(grid, chi_u), k_data=float(k[-1]),
                        settings=s)
