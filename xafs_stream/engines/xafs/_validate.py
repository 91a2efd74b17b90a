"""Input checks shared by the preprocessing steps (run once, at each public entry point).

Whole-call problems (the shared energy grid, shapes, parameters) raise :class:`InputError`. Problems of one
spectrum in a stack (NaN/inf in its μ, no edge, ...) are recorded per spectrum so that the rest of the batch
still runs: see :class:`SpectrumErrors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

MIN_POINTS = 15  # fewest energy points for which E0 (two derivative passes) and the fits mean anything


def check_energy(energy: object, *, name: str = "energy", min_points: int = MIN_POINTS) -> np.ndarray:
    """Return ``energy`` as a clean 1-D float64 array, strictly increasing and finite, or raise InputError."""
    try:
        e = np.asarray(energy, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not a numeric array ({exc})") from None
    if e.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of energies in eV, got shape {e.shape}")
    if e.size < min_points:
        raise InputError(f"{name}: too few points ({e.size}); need at least {min_points}")
    if not np.isfinite(e).all():
        bad = np.flatnonzero(~np.isfinite(e))
        raise InputError(f"{name}: {bad.size} non-finite value(s), first at index {bad[0]}")
    step = e[1:] - e[:-1]
    if not (step > 0).all():
        dup = np.flatnonzero(step == 0)
        if dup.size:
            i = dup[0]
            raise InputError(
                f"{name}: duplicate energies ({dup.size} repeated value(s), first {e[i]:.4f} eV at index {i + 1}); "
                "merge or drop repeated points first"
            )
        i = np.flatnonzero(step < 0)[0]
        raise InputError(
            f"{name}: not increasing at index {i + 1} ({e[i]:.4f} eV followed by {e[i + 1]:.4f} eV); "
            "sort the scan by energy first"
        )
    return e


def check_stack(mu: object, n_energy: int, *, name: str = "mu") -> tuple[np.ndarray, bool]:
    """Return (mu as a C-contiguous float64 array of shape (n_spectra, n_energy), input_was_1d)."""
    try:
        m = np.asarray(mu, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not a numeric array ({exc})") from None
    if m.ndim == 1:
        if m.size != n_energy:
            raise InputError(f"{name}: has {m.size} points but energy has {n_energy}")
        return np.ascontiguousarray(m[None, :]), True
    if m.ndim != 2:
        raise InputError(f"{name}: expected shape (n,) or (n_spectra, n), got {m.shape}")
    if m.shape[1] != n_energy:
        raise InputError(f"{name}: last axis has {m.shape[1]} points but energy has {n_energy}")
    if m.shape[0] == 0:
        raise InputError(f"{name}: empty stack (0 spectra)")
    return np.ascontiguousarray(m), False


def per_spectrum(value: object, n_spectra: int, *, name: str) -> np.ndarray | None:
    """Broadcast an optional scalar or (n_spectra,) parameter to shape (n_spectra,) float64 (None stays None)."""
    if value is None:
        return None
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number or an array of numbers, got {value!r}") from None
    if v.ndim == 0:
        return np.full(n_spectra, float(v))
    if v.shape != (n_spectra,):
        raise InputError(f"{name}: expected a scalar or shape ({n_spectra},), got shape {v.shape}")
    return v.copy()


@dataclass
class SpectrumErrors:
    """Per-spectrum status of a batch: ``ok[i]`` is False when spectrum i failed, ``messages[i]`` says why."""

    n_spectra: int
    ok: np.ndarray = field(init=False)
    messages: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ok = np.ones(self.n_spectra, dtype=bool)

    def fail(self, index: np.ndarray | int, message: str) -> None:
        """Mark spectra (an index, an index array or a boolean mask) as failed; the first reason is kept."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        for i in np.atleast_1d(idx).tolist():
            if self.ok[i]:
                self.ok[i] = False
                self.messages[int(i)] = message

    def fail_each(self, which: np.ndarray, make_message) -> None:
        """Mark spectra (boolean mask or index array), with ``make_message(i)`` giving each one's reason."""
        which = np.asarray(which)
        idx = np.flatnonzero(which) if which.dtype == bool else which
        for i in idx[self.ok[idx]].tolist():
            self.ok[i] = False
            self.messages[int(i)] = make_message(i)

    def raise_if_single(self, single: bool) -> None:
        """For a 1-D input (one spectrum) a failure is raised instead of recorded."""
        if single and not self.ok[0]:
            raise InputError(self.messages[0])


def check_finite_rows(
    mu2d: np.ndarray, energy: np.ndarray, status: SpectrumErrors, *, name: str = "mu"
) -> None:
    """Record spectra whose μ holds NaN or inf (checked in row blocks to keep temporaries small)."""
    block = 65536
    for lo in range(0, mu2d.shape[0], block):
        finite = np.isfinite(mu2d[lo : lo + block])
        bad_rows = ~finite.all(axis=1)
        if not bad_rows.any():
            continue

        def message(i: int, finite=finite, lo=lo) -> str:
            bad = np.flatnonzero(~finite[i - lo])
            return f"{name}: {bad.size} NaN/inf value(s) (first at {energy[bad[0]]:.2f} eV)"

        status.fail_each(np.flatnonzero(bad_rows) + lo, message)
