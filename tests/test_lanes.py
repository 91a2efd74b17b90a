"""Lanes: fast analyses never wait behind slow ones; under overload, slow analyses are shed by policy.

A real broker with ``lanes = true``, one fast-lane and one slow-lane worker (threads, real sockets) and a toy
registry: ``toy.norm`` (fast) and ``toy.fit`` (slow: 1 s, needs ``toy.norm``).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from xafs_stream.analyses.registry import Analysis, Registry
from xafs_stream.config import BrokerConfig, WorkerConfig
from xafs_stream.core import AnalysisResult, UnitEnvelope, WorkUnit
from xafs_stream.transport.broker import Broker
from xafs_stream.transport.publisher import UnitPublisher, broker_status
from xafs_stream.worker import UnitHandler, Worker

FIT_S = 1.0


class _Kept:
    """Stands in for Tiled: every stored record with the time it was stored."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()

    def write(self, record):
        with self.lock:
            self.records.append((time.monotonic(), record))

    def of(self, analysis):
        with self.lock:
            return [(t, r) for t, r in self.records if r.analysis == analysis]


def _registry() -> Registry:
    registry = Registry()
    registry.add(Analysis("toy.norm", "spectrum", "1", lambda u, up, s: AnalysisResult(
        summary={"mean": float(np.mean(u.arrays["mu"]))})))

    def fit(unit, upstream, settings):
        time.sleep(FIT_S)
        return AnalysisResult(summary={"twice": 2 * upstream["toy.norm"].summary["mean"]})

    registry.add(Analysis("toy.fit", "spectrum", "1", fit, requires=("toy.norm",), cost="slow"))
    return registry


@pytest.fixture
def lanes(tmp_path):
    def start(**settings):
        broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0", events="",
                                     store_dir=str(tmp_path / "store"), heartbeat_s=0.2, lanes=True, **settings))
        threading.Thread(target=broker.run, daemon=True).start()
        store = _Kept()
        workers = [Worker(broker.backend_address, UnitHandler(store, _registry()), WorkerConfig(credit=1, lane=lane),
                          BrokerConfig(heartbeat_s=0.2), name=f"w-{lane}") for lane in ("fast", "slow")]
        for w in workers:
            threading.Thread(target=w.run, daemon=True).start()
        pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
        started.append((broker, workers, pub))
        return broker, store, pub

    started = []
    yield start
    for broker, workers, pub in started:
        for w in workers:
            w.stop()
        pub.close(1)
        broker.stop()


def _units(run: str, n: int, merge: bool = False) -> list[UnitEnvelope]:
    out = [UnitEnvelope(WorkUnit(run, "spectrum", i, {"mu": np.full(4, float(i))})) for i in range(n)]
    if merge:
        out.append(UnitEnvelope(WorkUnit(run, "spectrum", "merge", {"mu": np.full(4, 10.0)})))
    return out


def test_fast_results_do_not_wait_behind_slow_fits(lanes, wait_for):
    broker, store, pub = lanes()
    assert wait_for(lambda: sum(lane["workers"] for lane in broker_status(broker.frontend_address)["lanes"].values()) == 2,
                    20)
    t0 = time.monotonic()
    for env in _units("run-l", 6):
        pub.submit(env)
    # every normalisation is stored long before the fits are (six fits take 6 s on the one slow worker)
    assert wait_for(lambda: len(store.of("toy.norm")) == 6, 20)
    fast_done = max(t for t, _ in store.of("toy.norm")) - t0
    assert fast_done < 2 * FIT_S, f"normalisations waited behind fits: last one after {fast_done:.1f} s"
    assert len(store.of("toy.fit")) < 6
    assert wait_for(lambda: len(store.of("toy.fit")) == 6, 30)
    # each result stored once, by its own lane's worker: the slow lane computed toy.norm for its fit, but did
    # not store it again
    norms, fits = store.of("toy.norm"), store.of("toy.fit")
    assert sorted(r.index for _, r in norms) == list(range(6)) and {r.worker for _, r in norms} == {"w-fast"}
    assert sorted(r.index for _, r in fits) == list(range(6)) and {r.worker for _, r in fits} == {"w-slow"}
    assert all(r.result.summary["twice"] == 2 * r.index for _, r in fits)
    status = broker_status(broker.frontend_address)
    assert status["stats"]["done"] == 6 and status["stored"] == 0 and status["pending"] == 0
    assert {w["lane"] for w in status["workers"]} == {"fast", "slow"}


def test_under_overload_slow_analyses_are_shed_by_policy_and_fast_ones_always_run(lanes, wait_for):
    broker, store, pub = lanes(shed_after=2, shed_keep="merges")
    assert wait_for(lambda: len(broker_status(broker.frontend_address)["workers"]) == 2, 20)
    for env in _units("run-o", 10, merge=True):
        pub.submit(env)
    assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["done"] == 11, 60)
    fits = {r.index: r for _, r in store.of("toy.fit")}
    assert len(store.of("toy.norm")) == 11 and all(r.status == "ok" for _, r in store.of("toy.norm"))
    shed = [i for i, r in fits.items() if r.status == "skipped"]
    assert shed and "merge" not in shed  # the merge's fit ran, as the policy keeps merges
    assert fits["merge"].status == "ok" and fits["merge"].result.summary == {"twice": 20.0}
    assert all(fits[i].error.startswith("shed under overload: more than 2 slow deliveries waiting") for i in shed)
    assert broker_status(broker.frontend_address)["stats"]["shed"] == len(shed)


def test_serve_splits_its_workers_into_lanes(tmp_path, wait_for):
    """``[service] slow_workers = 1`` of two: one worker per lane; a Cu spectrum's normalisation is stored by
    the fast one, its sparse-modeling fit by the slow one."""
    from xafs_stream.simulated_devices.samples import load_sample

    from xafs_stream.config import load_config
    from xafs_stream.service import Service
    from xafs_stream.storage.layout import result_node

    cfg = load_config(overrides={
        "service": {"data_dir": str(tmp_path), "workers": 2, "slow_workers": 1, "reconcile_recent": 0},
        "broker": {"frontend": "tcp://127.0.0.1:0", "backend": "tcp://127.0.0.1:0", "events": ""},
        "worker": {"analyses": "xafs.normalize,spm"}, "dashboard": {"enabled": False}})
    sample = load_sample("Cu")
    energy = np.linspace(sample.e0 - 150, sample.e0 + 900, 600)
    unit = WorkUnit("run-serve-lanes", "spectrum", 0, {"energy": energy, "mu": sample.mu_t(energy)},
                    {"sample": "Cu foil", "element": "Cu", "edge": "K"})
    with Service(cfg) as svc:
        assert [svc.lane_of(i) for i in range(2)] == ["fast", "slow"]
        pub = UnitPublisher(svc.frontend, tmp_path / "outbox")
        try:
            assert wait_for(lambda: {w["lane"] for w in svc.status()["workers"]} == {"fast", "slow"}, 60)
            # the slow lane's worker yields the CPU: it runs [worker] slow_nice (default 10) nicer than the fast
            fast, slow = (os.getpriority(os.PRIO_PROCESS, proc.pid) for proc in svc.worker_procs)
            assert slow == min(fast + 10, 19), (fast, slow)
            pub.submit(UnitEnvelope(unit))
            assert wait_for(lambda: svc.status()["stats"]["done"] == 1, 120)
        finally:
            pub.close(1)
        norm = result_node(svc.tiled.client, unit.run_uid, "xafs.normalize", "repeat_0").metadata
        spm = result_node(svc.tiled.client, unit.run_uid, "spm", "repeat_0").metadata
        assert norm["status"] == "ok" and norm["worker"].startswith("w0-")
        assert spm["status"] == "ok" and spm["worker"].startswith("w1-"), spm["error"]


def test_the_fast_lane_stores_the_map_owners_whole_map(tmp_path):
    """The post-processing hook's records (the whole map) belong to no registered analysis: a fast-lane
    delivery stores them; the slow lane does not run the hook. (With lanes on, the map was never written.)"""
    from xafs_stream.core import ResultRecord

    registry = Registry()
    registry.add(Analysis("toy.tile", "tile", "1", lambda u, up, s: AnalysisResult(summary={"sum": 1.0})))

    def whole_map(envelope, records):
        return [ResultRecord(run_uid=envelope.unit.run_uid, unit_id="map", kind="map", index="map",
                             analysis="toy.map", version="1", status="ok", result=AnalysisResult(
                                 summary={"tiles": len(records)}))]

    for lane, stored in (("fast", ["toy.tile", "toy.map"]), ("slow", []), ("", ["toy.tile", "toy.map"])):
        store = _Kept()
        handler = UnitHandler(store, registry, post_process=whole_map)
        unit = WorkUnit("run-map", "tile", 0, {"stack": np.ones((2, 2, 2))})
        handler.handle(UnitEnvelope(unit, extra={"lane": lane} if lane else {}))
        assert [r.analysis for _, r in store.records] == stored, lane
