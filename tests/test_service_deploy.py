"""Deployment by configuration: restart on the same data directory reconciles runs; an external
`tiled serve` server (SQLite here, PostgreSQL when available) works through --tiled-uri alone."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from xafs_stream.plans import xafs_scan

from xafs_stream.config import load_config
from xafs_stream.service import Service, subscribe
from xafs_stream.storage.layout import RESULTS_ROOT
from xafs_stream.testing import ThrowawayPostgres, free_port, postgres_bindir

REGIONS = [[-60, 60, 2, "E"]]


def service_config(data_dir, **tiled):
    return load_config(overrides={
        "service": {"data_dir": str(data_dir), "workers": 1, "reconcile_recent": 5},
        "broker": {"frontend": "tcp://127.0.0.1:0", "backend": "tcp://127.0.0.1:0", "events": "tcp://127.0.0.1:0"},
        "worker": {"analyses": "xafs.normalize"}, "tiled": tiled, "dashboard": {"enabled": False}})


def test_restart_reconciles_runs_recorded_without_live_processing(tmp_path, RE, beamline, collect, wait_for):
    cfg = service_config(tmp_path)
    with Service(cfg) as svc:
        session = subscribe(RE, cfg, tiled_client=svc.tiled.client, live_processing=False)
        RE(xafs_scan([beamline.scaler], beamline.dcm, REGIONS, element="Cu", sample="Cu", dwell_s=0.2))
        session.close()
    uid = collect[0][1]["uid"]
    cfg2 = service_config(tmp_path)
    with Service(cfg2) as svc:  # same data directory: the embedded Tiled keeps the raw run
        client = svc.tiled.client

        def done():
            return (RESULTS_ROOT in client and uid in client[RESULTS_ROOT]
                    and sorted(client[RESULTS_ROOT][uid]["xafs_normalize"]) == ["merge", "repeat_0"])

        assert wait_for(done, 90, poll_s=0.5), "the service did not fill the recorded run on start"


def _tiled_serve(catalog_uri: str, tmp_path, api_key: str, wait_for) -> tuple[subprocess.Popen, str]:
    port = free_port()
    tables = f"sqlite:///{tmp_path / 'tables.db'}" if catalog_uri.startswith("sqlite") else catalog_uri
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiled", "serve", "catalog", catalog_uri, "--init", "--host", "127.0.0.1",
         "--port", str(port), "-w", str(tmp_path / "data"), "-w", tables, "--api-key", api_key],
        stdout=open(tmp_path / "tiled-serve.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    ok = wait_for(lambda: _healthy(url) or proc.poll() is not None, 120, poll_s=0.5) and proc.poll() is None
    assert ok, "tiled serve did not start:\n" + (tmp_path / "tiled-serve.log").read_text()[-2000:]
    return proc, f"{url}/api/v1"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _run_against(uri: str, api_key: str, tmp_path, RE, beamline, collect):
    cfg = service_config(tmp_path / "svc", uri=uri, api_key=api_key)
    with Service(cfg) as svc:
        assert svc.tiled.server is None  # nothing embedded: the external server is used
        session = subscribe(RE, cfg, frontend=svc.frontend)  # raw writer connects through [tiled] uri
        RE(xafs_scan([beamline.scaler], beamline.dcm, REGIONS, element="Cu", sample="Cu", dwell_s=0.2))
        session.flush()
        assert svc.wait_idle(60, publisher=session.publisher)
        session.close()
        uid = collect[0][1]["uid"]
        run = svc.tiled.client[RESULTS_ROOT][uid]
        md = run["xafs_normalize"]["merge"].metadata
        assert md["status"] == "ok", md["error"]
        assert svc.tiled.client[uid].metadata["start"]["sample"] == "Cu"


def test_external_tiled_server_by_configuration(tmp_path, RE, beamline, collect, wait_for):
    proc, uri = _tiled_serve(f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path, "secretkey1", wait_for)
    try:
        _run_against(uri, "secretkey1", tmp_path, RE, beamline, collect)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow  # in CI, test_many_hosts.py runs the same PostgreSQL-backed tiled serve, on its own host
@pytest.mark.skipif(postgres_bindir() is None, reason="no PostgreSQL server binaries on this machine")
def test_postgresql_backed_tiled_by_configuration(tmp_path, RE, beamline, collect, wait_for):
    with ThrowawayPostgres() as pg:
        proc, uri = _tiled_serve(pg.new_database("catalog"), tmp_path, "secretkey2", wait_for)
        try:
            _run_against(uri, "secretkey2", tmp_path, RE, beamline, collect)
        finally:
            proc.terminate()
            proc.wait(10)
