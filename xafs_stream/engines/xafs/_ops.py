"""numpy's ``where`` / ``minimum`` / ``maximum`` / ``round`` / ``full`` / ``searchsorted`` for plain Python numbers.

The per-spectrum rules of the preprocessing steps (fit ranges, search windows) are written once for a stack,
on arrays of shape (n_spectra,) with ``xp=np``; a single spectrum runs the same code on Python floats with
``xp=SCALAR``, where each numpy call on a 1-element array would cost ~1-2 µs (tens of them per spectrum
made up a large part of the single-spectrum time, measured with benchmarks/bench_preprocess.py).
Only what the rules use is provided; arguments are finite numbers.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right


class _ScalarOps:
    @staticmethod
    def where(cond, a, b):
        return a if cond else b

    @staticmethod
    def minimum(a, b):
        return min(a, b)

    @staticmethod
    def maximum(a, b):
        return max(a, b)

    @staticmethod
    def round(x: float) -> float:
        return float(round(x))  # round half to even, as np.round

    @staticmethod
    def full(shape, value):
        return value

    @staticmethod
    def searchsorted(grid, value, side: str = "left") -> int:
        return bisect_right(grid, value) if side == "right" else bisect_left(grid, value)


SCALAR = _ScalarOps()
