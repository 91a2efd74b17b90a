"""Analyses used only by the fault tests, loaded into worker processes through ``[worker] plugins``.

``test.slow`` sleeps (longer in the worker whose name is in XAFS_TEST_SLOW_WORKER) so tests can act while a
unit is in flight; ``test.raises`` always fails, to check that errors are recorded and others continue.
"""

import os
import time

import numpy as np

from xafs_stream.analyses.registry import AnalysisResult, register


@register("test.slow", "spectrum", "1", settings=("sleep_s", "slow_sleep_s"))
def slow(unit, upstream, config):
    delay = float(config.get("sleep_s", 0.3))
    if os.environ.get("XAFS_TEST_SLOW_WORKER") and os.environ.get("XAFS_TEST_SLOW_WORKER") == os.environ.get(
            "XAFS_TEST_WORKER_TAG"):
        delay = float(config.get("slow_sleep_s", 3.0))
    time.sleep(delay)
    return AnalysisResult(summary={"test.n_points": int(np.size(unit.arrays.get("energy", [])))})


@register("test.raises", "spectrum", "1")
def raises(unit, upstream, config):
    raise RuntimeError(f"deliberate failure on unit {unit.index}")
