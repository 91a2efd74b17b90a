"""Feedback from the service to plans: per-repeat results read back from Tiled.

:class:`TiledFeedback` is the feedback source of :func:`xafs_stream.plans.feedback.xafs_scan_until`:
``repeat_result(run_uid, repeat)`` returns the flat summary values (``noise_chi``, ``e0``, ``quality.bad``,
``quality.reasons``, ``spm.shell1.N_err`` ...) of that repeat once the listed analyses are stored, else None.
"""

from __future__ import annotations

from typing import Any

from .storage.results import RESULTS_ROOT, node_key


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"spm": {"shell1": {"N": 12}}}`` → ``{"spm.shell1.N": 12}`` (the inverse of ``nest_summary``)."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class TiledFeedback:
    """Read a repeat's analysis summaries from the results in Tiled.

    Parameters
    ----------
    client : Tiled catalog root
    analyses : the analyses whose results must be present (default: normalisation and quality)
    """

    def __init__(self, client: Any, analyses: tuple[str, ...] = ("xafs.normalize", "xafs.quality")):
        self.client = client
        self.analyses = tuple(analyses)

    def repeat_result(self, run_uid: str, repeat: int) -> dict[str, Any] | None:
        try:
            run = self.client[RESULTS_ROOT][run_uid]
        except KeyError:
            return None
        out: dict[str, Any] = {}
        for analysis in self.analyses:
            try:
                md = run[node_key(analysis)][f"repeat_{repeat}"].metadata
            except KeyError:
                return None
            out[f"status.{analysis}"] = md.get("status")
            out.update(flatten(md.get("summary") or {}))
        return out
