"""Shared fixtures: a real embedded Tiled server, a simulated beamline, a RunEngine, the one wait helper."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def _wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0, *, poll_s: float = 0.05,
              what: str = "") -> Any:
    """Call ``predicate`` every ``poll_s`` until it returns something truthy or ``timeout_s`` passes; returns
    its last value (so ``assert wait_for(...)`` fails on a timeout). With ``what``, a timeout raises
    AssertionError saying what was awaited instead."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if not value and what:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
    return value


@pytest.fixture(scope="session")
def wait_for():
    """The tests' one wait/poll helper: ``wait_for(predicate, timeout_s=20, *, poll_s=0.05, what="")``."""
    return _wait_for


@pytest.fixture(scope="module")
def one_blas_thread():
    """One BLAS thread for a module (``pytestmark = pytest.mark.usefixtures("one_blas_thread")``): the SpM
    products are small, and OpenBLAS threads on a shared 2-core machine made test_spm_synthetic.py 4x slower
    (43 s vs 9 s measured)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def tiled(tmp_path_factory):
    """A real embedded Tiled server (SQLite) for the whole session; yields a TiledHandle."""
    from xafs_stream.storage.tiled_server import start_embedded_tiled

    handle = start_embedded_tiled(tmp_path_factory.mktemp("tiled"))
    yield handle
    handle.close()


@pytest.fixture
def beamline():
    from xafs_stream.simulated_devices.beamline import make_beamline

    return make_beamline(sample="Cu", seed=1)


@pytest.fixture
def RE():
    from bluesky import RunEngine

    return RunEngine({}, call_returns_result=False)


@pytest.fixture
def collect(RE):
    """Subscribe a list collector to the RunEngine; returns the list of (name, doc)."""
    docs: list = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


@pytest.fixture
def raw_only(tiled, RE, tmp_path):
    """A RunEngine session that writes raw runs only (live processing switched off), for reprocessing."""
    from xafs_stream.config import load_config
    from xafs_stream.service import subscribe

    cfg = load_config(overrides={"service": {"data_dir": str(tmp_path)}})
    session = subscribe(RE, cfg, tiled_client=tiled.client, live_processing=False)
    yield session
    session.close()
