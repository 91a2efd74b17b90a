"""``xafs_scan_until``: repeat an XAFS scan until the merged spectrum is good enough, rescanning bad repeats.

After each repeat the plan asks a *feedback source* for that repeat's results as computed by the service
(duck-typed: any object with ``repeat_result(run_uid, repeat) -> dict | None`` returning flat summary
values such as ``noise_chi`` and ``quality.bad``, or None while not ready; the service side provides
:class:`xafs_stream.client.feedback.TiledFeedback`). The plan itself never talks to workers.

Stopping rules, checked after every repeat:

- ``target_noise``: the noise of the merge of the good repeats, ε = (Σ 1/ε_i²)^(-1/2) over their
  ``noise_key`` values (default ``noise_chi``, the χ(k) noise), reached the target;
- ``target_key``/``target_value``: the same combination of another per-repeat uncertainty (e.g.
  ``spm.shell1.sigma2_err``) reached ``target_value``;
- ``max_repeats`` good repeats done; or ``max_rescans`` bad repeats spent; or no result within
  ``result_timeout_s``.

Repeats flagged bad (``quality.bad``: beam dump, saturation, glitches beyond repair) do not count and are
rescanned (at most ``max_rescans`` times). Each decision is recorded as an event in a ``feedback`` stream
(repeat, good, combined noise, reason) and printed; the last one, and the run's stop document (``reason``), say why the scan stopped.
"""

from __future__ import annotations

import time
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from ophyd import Signal

from .regions import PlanArgumentError
from .xafs import ScanSetup


def combined_uncertainty(values: list[float]) -> float:
    """Uncertainty of an inverse-variance merge of independent measurements: (Σ 1/σ_i²)^(-1/2)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], float)
    return float(1.0 / np.sqrt(np.sum(1.0 / arr**2))) if arr.size else float("inf")


def xafs_scan_until(
    detectors: list,
    mono: Any,
    regions: list | None = None,
    *,
    element: str,
    feedback: Any,
    target_noise: float | None = None,
    noise_key: str = "noise_chi",
    target_key: str | None = None,
    target_value: float | None = None,
    max_repeats: int = 10,
    max_rescans: int = 3,
    result_timeout_s: float = 60.0,
    poll_s: float = 0.2,
    edge: str = "K",
    e0: float | None = None,
    sample: str = "",
    mode: str = "transmission",
    dwell_s: float = 1.0,
    kweight_dwell: float = 1.0,
    max_dwell_s: float | None = 10.0,
    md: dict | None = None,
):
    """Repeat an XAFS scan (one run) until a target is met; see the module docstring for the rules."""
    if target_noise is None and target_key is None:
        raise PlanArgumentError("give target_noise, or target_key with target_value")
    if target_key is not None and (target_value is None or not target_value > 0):
        raise PlanArgumentError(f"target_value must be > 0 with target_key {target_key!r}")
    if target_noise is not None and not target_noise > 0:
        raise PlanArgumentError(f"target_noise must be > 0, got {target_noise!r}")
    if not isinstance(max_repeats, (int, np.integer)) or max_repeats < 1:
        raise PlanArgumentError(f"max_repeats must be an integer >= 1, got {max_repeats!r}")
    if not isinstance(max_rescans, (int, np.integer)) or max_rescans < 0:
        raise PlanArgumentError(f"max_rescans must be an integer >= 0, got {max_rescans!r}")
    if not callable(getattr(feedback, "repeat_result", None)):
        raise PlanArgumentError("feedback must provide repeat_result(run_uid, repeat)")
    key = target_key or noise_key
    goal = target_value if target_key else target_noise
    extra = {"feedback_target": {"key": key, "value": goal}, "max_repeats": int(max_repeats),
             "max_rescans": int(max_rescans)}
    scan = ScanSetup.build(detectors, mono, regions, element=element, edge=edge, e0=e0, sample=sample, mode=mode,
                           repeats=int(max_repeats), dwell_s=dwell_s, kweight_dwell=kweight_dwell,
                           max_dwell_s=max_dwell_s, plan_name="xafs_scan_until", md={**extra, **(md or {})})
    signals = {name: Signal(name=f"feedback_{name}", value=value, kind="normal") for name, value in (
        ("repeat", 0), ("good", True), ("combined", float("inf")), ("n_good", 0), ("reason", ""))}

    def record(**values):
        for name, value in values.items():
            yield from bps.mv(signals[name], value)
        yield from bps.trigger_and_read(list(signals.values()), name="feedback")

    def repeats(run_uid: str):
        values: list[float] = []
        n_bad = 0
        repeat = 0
        while True:
            yield from scan.sweep(repeat)
            result = None
            deadline = time.monotonic() + result_timeout_s
            while result is None and time.monotonic() < deadline:
                result = feedback.repeat_result(run_uid, repeat)
                if result is None:
                    yield from bps.sleep(poll_s)
            if result is None:
                reason = f"stopped: no result for repeat {repeat} within {result_timeout_s:.0f} s"
                yield from record(repeat=repeat, good=False, combined=combined_uncertainty(values),
                                  n_good=len(values), reason=reason)
                print(f"xafs_scan_until: {reason}")
                return reason
            good = not bool(result.get("quality.bad", False))
            if good:
                values.append(result.get(key))
            else:
                n_bad += 1
            combined = combined_uncertainty(values)
            if good and combined <= goal:
                reason = f"target reached: {key} = {combined:.3g} <= {goal:.3g} after {len(values)} good repeat(s)"
            elif len(values) >= max_repeats:
                reason = f"stopped at max_repeats = {max_repeats}: {key} = {combined:.3g} (target {goal:.3g})"
            elif not good and n_bad > max_rescans:
                reason = f"stopped: {n_bad} bad repeats (max_rescans = {max_rescans}); last: {result.get('quality.reasons')}"
            else:
                why = "" if good else f"repeat {repeat} flagged bad ({result.get('quality.reasons')}): rescanning"
                yield from record(repeat=repeat, good=good, combined=combined, n_good=len(values), reason=why)
                if why:
                    print(f"xafs_scan_until: {why}")
                repeat += 1
                continue
            yield from record(repeat=repeat, good=good, combined=combined, n_good=len(values), reason=reason)
            print(f"xafs_scan_until: {reason}")
            return reason

    @bpp.stage_decorator(detectors)
    def inner():
        run_uid = yield from bps.open_run(md=scan.md)  # the uid is needed to ask for this run's results
        reason = yield from repeats(run_uid)
        yield from bps.close_run(exit_status="success", reason=reason)  # the stop document says why
        return reason

    return (yield from inner())
