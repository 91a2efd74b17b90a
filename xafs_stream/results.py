"""Reading analysis results after the run: ``xafs_stream.results.read(client, uid, "spm")``.

The public reader of the results layout (:mod:`xafs_stream.storage.layout` owns the layout): arrays come back
as stored by the analysis, without the NaN padding that shares one Tiled table between arrays of different
lengths, with the flat summary numbers, the verdict and the parameters. ``Result.dataset()`` gives an
xarray Dataset whose dimensions are the axes the arrays share (``energy``, ``k``, ``r``, ...).

A plain Tiled client can do the same from the node's metadata alone: a table result lists its arrays in
``table_columns`` and each array's length in ``table_lengths`` (rows beyond it are padding). See
``docs/results.md`` for a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .storage.layout import analysis_results, flatten_summary, read_arrays, result_node

#: Arrays that are the axes of others (the first one of a given length names that dimension).
AXES = ("energy", "k", "r", "spm_k", "spm_r", "x", "alpha", "spm_alpha", "r_grid", "sigma2_grid")


@dataclass
class Result:
    """One stored result.

    Attributes
    ----------
    run_uid, analysis, unit : where it is (unit: "merge", "repeat_0", "map", ...)
    status : "ok", "error" or "skipped"; error : why, when not ok
    verdict, verdict_reasons : "ok" / "warn" / "bad" and short reasons ("" when the analysis does not judge)
    summary : flat summary numbers ({"shell1.N": 11.1, ...}, keys without the analysis prefix)
    params : the settings the analysis used
    arrays : name -> ndarray, unpadded
    """

    run_uid: str
    analysis: str
    unit: str
    status: str
    error: str | None
    verdict: str
    verdict_reasons: list[str]
    summary: dict[str, Any]
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def dataset(self) -> Any:
        """The 1-D arrays as an xarray Dataset: an array whose length equals that of an axis array (``energy``,
        ``k``, ``r``, ...) lies along it; the rest get their own dimension ``<name>_i``. N-D arrays keep
        ``dim_0 ...`` dimensions named ``<name>_0``, ``<name>_1``."""
        import xarray as xr

        axes: dict[int, str] = {}
        for name in AXES:
            arr = self.arrays.get(name)
            if arr is not None and np.ndim(arr) == 1 and arr.size not in axes:
                axes[arr.size] = name
        data_vars, coords = {}, {}
        for name, arr in self.arrays.items():
            arr = np.asarray(arr)
            if arr.ndim == 1 and axes.get(arr.size) == name:
                coords[name] = (name, arr)
            elif arr.ndim == 1 and arr.size in axes:
                data_vars[name] = (axes[arr.size], arr)
            elif arr.ndim == 1:
                data_vars[name] = (f"{name}_i", arr)
            else:
                data_vars[name] = tuple(f"{name}_{i}" for i in range(arr.ndim)), arr
        attrs = {"run_uid": self.run_uid, "analysis": self.analysis, "unit": self.unit, "verdict": self.verdict,
                 "verdict_reasons": "; ".join(self.verdict_reasons)}
        attrs.update({k: v for k, v in self.summary.items() if isinstance(v, (int, float, str))})
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def read(client: Any, run_uid: str, analysis: str, unit: str = "merge") -> Result:
    """The result of ``analysis`` (e.g. "xafs.normalize", "spm", "bayes.xanes", "imaging.map") for one unit
    of a run (``unit`` "merge" by default; "repeat_0", "map", ...). ``client`` is a Tiled client of the
    service's server (``session.tiled_client``, or ``tiled.client.from_uri``). KeyError when it is not
    stored (yet)."""
    node = result_node(client, run_uid, analysis, unit)
    if node is None:
        raise KeyError(f"no stored result {analysis}/{unit} for run {run_uid}")
    md = dict(node.metadata)
    status = md.get("status", "")
    prefix = analysis + "."
    summary = {k[len(prefix):] if k.startswith(prefix) else k: v
               for k, v in flatten_summary(md.get("summary") or {}).items()}
    arrays = read_arrays(node) if status == "ok" else {}
    return Result(run_uid=run_uid, analysis=analysis, unit=unit, status=status, error=md.get("error"),
                  verdict=md.get("verdict") or "", verdict_reasons=list(md.get("verdict_reasons") or []),
                  summary=summary, params=dict(md.get("params") or {}), arrays=arrays)


def units(client: Any, run_uid: str, analysis: str) -> list[str]:
    """The stored units of ``analysis`` for a run ("repeat_0", "merge", ...)."""
    return list(analysis_results(client, run_uid, analysis))


__all__ = ["Result", "read", "units"]
