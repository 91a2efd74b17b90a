"""Argument checks shared by the plans (run before any message is yielded)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xraydb

from .regions import PlanArgumentError

CHANNEL_NAMES = ("i0", "it", "iref", "ifluor", "clock")


def lookup_e0(element: str, edge: str, e0: float | None) -> float:
    """E0 in eV: ``e0`` if given, else the tabulated edge from xraydb. Unknown element/edge raise."""
    if not isinstance(element, str) or not element:
        raise PlanArgumentError(f"element must be a symbol such as 'Cu', got {element!r}")
    try:
        tabulated = float(xraydb.xray_edge(element, edge).energy)
    except Exception:  # xraydb raises KeyError/ValueError/AttributeError depending on what is unknown
        raise PlanArgumentError(f"unknown element/edge {element!r}/{edge!r} (not in xraydb)") from None
    if e0 is None:
        return tabulated
    try:
        e0 = float(e0)
    except (TypeError, ValueError):
        raise PlanArgumentError(f"e0 must be a number in eV, got {e0!r}") from None
    if not np.isfinite(e0) or e0 <= 0:
        raise PlanArgumentError(f"e0 must be a positive energy in eV, got {e0!r}")
    return e0


def check_energies_in_range(mono: Any, energies: np.ndarray) -> None:
    """Raise if any energy (eV) is outside ``mono.limits`` (when the positioner has limits)."""
    if len(energies) == 0:
        raise PlanArgumentError("the scan has no energy points")
    limits = getattr(mono, "limits", None)
    if not limits or limits[0] == limits[1]:
        return
    low, high = float(limits[0]), float(limits[1])
    if energies.min() < low or energies.max() > high:
        raise PlanArgumentError(
            f"energies {energies.min():.1f}-{energies.max():.1f} eV are outside the range of "
            f"{getattr(mono, 'name', 'the monochromator')} ({low:.0f}-{high:.0f} eV)"
        )


def channel_keys(detectors: list) -> dict[str, str]:
    """Data keys of the I0/It/Iref/If channels found on the detectors (component names i0, it, ...)."""
    keys: dict[str, str] = {}
    for det in detectors:
        for channel in CHANNEL_NAMES:
            sig = getattr(det, channel, None)
            if sig is not None and hasattr(sig, "name") and channel not in keys:
                keys[channel] = sig.name
    return keys
