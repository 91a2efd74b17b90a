"""End to end with real parts: RunEngine → callbacks → ZeroMQ broker process → worker processes → Tiled."""

from __future__ import annotations

import numpy as np
import pytest
from xafs_stream.plans import mu_xafs_map, xafs_scan
from xafs_stream.simulated_devices.phantom import default_map_energies

from xafs_stream.config import load_config
from xafs_stream.service import Service, subscribe
from xafs_stream.storage.layout import RESULTS_ROOT, read_arrays, run_results
from xafs_stream.transport.events import ResultEvents

FAST_ANALYSES = "xafs.normalize,xafs.normalize_tile,imaging.features"


def make_config(data_dir, **sections):
    overrides = {
        "service": {"data_dir": str(data_dir), "workers": 2, "reconcile_recent": 0},
        "broker": {"frontend": "tcp://127.0.0.1:0", "backend": "tcp://127.0.0.1:0", "events": "tcp://127.0.0.1:0", "heartbeat_s": 0.5,
                   "worker_timeout_s": 3.0},
        "worker": {"analyses": FAST_ANALYSES},
        "dashboard": {"port": 0},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(overrides=overrides)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(make_config(tmp_path_factory.mktemp("svc"))).start(reconcile=False)
    yield svc
    svc.stop()


@pytest.fixture
def session(service, RE):
    s = subscribe(RE, service.config, tiled_client=service.tiled.client, frontend=service.frontend)
    yield s
    s.close()


def results_of(client, uid):
    return client[RESULTS_ROOT][uid]


def test_spectra_end_to_end(service, session, RE, beamline, collect):
    events = ResultEvents(service.events, analysis="xafs.normalize")  # a live reader, subscribed before the scan
    assert events.wait_ready()  # the broker has the subscription
    RE(xafs_scan([beamline.scaler], beamline.dcm, element="Cu", sample="Cu", repeats=2, dwell_s=0.5))
    session.flush()
    assert service.wait_idle(120, publisher=session.publisher)
    uid = collect[0][1]["uid"]
    # every normalised result was announced once it was readable, and reads in one request to the same arrays
    told = {e.unit: e for e in events.iter(timeout_s=3) if e.run_uid == uid}
    events.close()
    assert sorted(told) == ["merge", "repeat_0", "repeat_1"]
    for key, event in told.items():
        stored = service.tiled.client[event.path]
        assert event.ok and event.family == "table" and event.flat_summary["e0"] == stored.metadata["summary"]["e0"]
        fast, full = event.read(service.tiled.client), read_arrays(stored)
        assert fast.keys() == full.keys() and all(np.array_equal(fast[k], full[k], equal_nan=True) for k in full)
    run = results_of(service.tiled.client, uid)
    assert sorted(run["xafs_normalize"]) == ["merge", "repeat_0", "repeat_1"]
    for key in ("repeat_0", "repeat_1", "merge"):
        md = run["xafs_normalize"][key].metadata
        assert md["status"] == "ok", md["error"]
        assert abs(md["summary"]["e0"] - 8979.0) < 1.0
        # where its lag went: at the worker, then started, then stored, in that order (s after the unit completed)
        t = md["timings"]
        assert 0 <= t["received_after_complete_s"] <= t["started_after_complete_s"] <= t["since_unit_complete_s"] < 60
    # the run node carries the merged spectrum's numbers for queries
    assert run.metadata["sample"] == "Cu"
    assert abs(run.metadata["summary"]["e0"] - 8979.0) < 1.0
    arrays = read_arrays(run["xafs_normalize"]["merge"])
    assert arrays["norm"].shape == arrays["energy"].shape
    assert np.nanmax(arrays["norm"]) > 0.9
    from tiled.queries import Key

    found = service.tiled.client[RESULTS_ROOT].search(Key("sample") == "Cu").search(Key("summary.e0") > 8978)
    assert uid in list(found)


def test_run_start_hint_prepares_result_nodes_and_picks_the_owner(service, session, wait_for):
    """The run-start hint (OPEN) reaches one worker, which creates the run's result and analysis nodes before
    any unit exists; the run's units then go to that worker (affinity chosen at the hint)."""
    import uuid

    from xafs_stream.core import UnitEnvelope, WorkUnit
    from xafs_stream.data import SPECTRA_DIR
    from xafs_stream.io import read_spectrum
    from xafs_stream.transport.publisher import broker_status

    uid = str(uuid.uuid4())
    # the hint goes to a connected worker (run alone, this test can be first)
    wait_for(lambda: len(broker_status(service.frontend)["workers"]) >= 2, 30, poll_s=0.1)
    opened = broker_status(service.frontend)["stats"]["opened"]
    session.publisher.announce(uid, "spectrum", f"run:{uid}", {"sample": "Cu", "element": "Cu", "edge": "K"})
    client = service.tiled.client
    wait_for(lambda: "xafs_normalize" in (run_results(client, uid) or ()), 20, poll_s=0.1,
             what="the run's result nodes to be prepared")
    analysis = client[RESULTS_ROOT][uid]["xafs_normalize"]
    assert list(analysis) == []  # prepared, no unit yet
    assert client[RESULTS_ROOT][uid].metadata["sample"] == "Cu"
    assert broker_status(service.frontend)["stats"]["opened"] == opened + 1
    cu = read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")
    energy, mu = cu.energy, cu.mu
    for rep in range(3):
        session.publisher.submit(UnitEnvelope(
            WorkUnit(uid, "spectrum", rep, {"energy": energy, "mu": mu}, {"sample": "Cu", "element": "Cu"}),
            affinity=f"run:{uid}"))
    assert session.publisher.flush(30) and service.wait_idle(60, publisher=session.publisher)
    workers = {client[RESULTS_ROOT][uid]["xafs_normalize"][f"repeat_{rep}"].metadata["worker"] for rep in range(3)}
    assert len(workers) == 1


# energy-outer is slow-marked here (18 s of CI): its unit building is tested in test_callbacks_units, and
# through Tiled in test_raw_tiled, test_reprocess and test_dask_batch
@pytest.mark.parametrize("order", ["tile-outer", pytest.param("energy-outer", marks=pytest.mark.slow)])
def test_map_tiles_end_to_end(service, session, RE, beamline, collect, order):
    energies = list(default_map_energies(30))
    RE(mu_xafs_map(beamline.mapdet, beamline.dcm, beamline.stage, energies, n_tile_rows=2, n_tile_cols=2,
                   element="Fe", sample="phantom", order=order))
    session.flush()
    assert service.wait_idle(180, publisher=session.publisher)
    uid = collect[0][1]["uid"]
    run = results_of(service.tiled.client, uid)
    for analysis in ("xafs_normalize_tile", "imaging_features"):
        tiles = sorted(run[analysis])
        assert tiles == [f"tile_{i}" for i in range(4)], analysis
        assert all(run[analysis][t].metadata["status"] == "ok" for t in tiles)
    md = run["imaging_map"]["map"].metadata
    assert md["status"] == "ok", md["error"]
    assert md["summary"]["imaging"]["n_tiles_done"] == 4
    # the run node's summary, deferred while the map filled, is the final map's
    assert run.metadata["summary"]["imaging"] == md["summary"]["imaging"]
    assert run.metadata["quality"]["imaging_map"] == md["verdict"]
    maps = read_arrays(run["imaging_map"]["map"])
    assert maps["labels"].shape == (32, 32)
