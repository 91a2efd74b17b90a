"""Bluesky plans for XAFS energy scans and μ-XAFS maps (installed as ``xafs_stream.plans``).

Plans know nothing of workers or analyses: they only move devices and emit documents (the adaptive scan asks
a pure engine, ``xafs_stream.engines.adaptive``, where to measure next). Arguments are
plain numbers, strings and lists so the plans can be queued by bluesky-queueserver.
"""

from .adaptive import xafs_scan_adaptive
from .feedback import xafs_scan_until
from .mapping import mu_xafs_map
from .regions import DEFAULT_REGIONS, PlanArgumentError, estimate_scan_time, parse_regions, region_energies
from .xafs import xafs_scan

__all__ = [
    "DEFAULT_REGIONS", "PlanArgumentError", "estimate_scan_time", "mu_xafs_map", "parse_regions",
    "region_energies", "xafs_scan", "xafs_scan_adaptive", "xafs_scan_until",
]
