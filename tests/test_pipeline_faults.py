"""Faults with real sockets, real processes, real Tiled: every unit ends with exactly one result."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq
from xafs_stream.simulated_devices.samples import load_sample

from xafs_stream.config import load_config
from xafs_stream.core import UnitEnvelope, WorkUnit
from xafs_stream.service import Service
from xafs_stream.storage.layout import RESULTS_ROOT
from xafs_stream.storage.tiled_server import start_tiled_process
from xafs_stream.transport import protocol as P
from xafs_stream.transport.publisher import UnitPublisher

PLUGINS = str(Path(__file__).parent / "plugins")
ANALYSES = ["xafs.normalize", "test.slow", "test.raises"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    # the workers import the test plugins; restored afterwards (an empty entry left behind would put the
    # current directory, a source checkout, on the path of every later child process)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGINS, saved) if p)
    sys.path.insert(0, PLUGINS)
    cfg = load_config(overrides={
        "service": {"data_dir": str(tmp_path_factory.mktemp("faults")), "workers": 2, "reconcile_recent": 0},
        "broker": {"frontend": "tcp://127.0.0.1:0", "backend": "tcp://127.0.0.1:0", "events": "tcp://127.0.0.1:0", "heartbeat_s": 0.5,
                   "worker_timeout_s": 2.0, "max_message_bytes": 4 << 20},
        "worker": {"analyses": ",".join(ANALYSES), "plugins": "xafs_test_plugins", "credit": 1},
        "dashboard": {"enabled": False},
    })
    cfg.analysis["test.slow"] = {"sleep_s": 0.3, "slow_sleep_s": 3.0}
    svc = Service(cfg).start(reconcile=False)
    yield svc
    svc.stop()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved
    sys.path.remove(PLUGINS)


@pytest.fixture
def publisher(service, tmp_path):
    pub = UnitPublisher(service.frontend, tmp_path / "outbox", ack_timeout_s=2.0)
    yield pub
    pub.close(1)


def spectrum_units(n: int, seed: int = 0) -> tuple[str, list[UnitEnvelope]]:
    """``n`` simulated Cu spectra as repeat units of one new run."""
    sample = load_sample("Cu")
    rng = np.random.default_rng(seed)
    energy = np.concatenate([np.arange(8779, 8949, 10.0), np.arange(8949, 9009, 0.5), 9009 + np.arange(1, 60) ** 2 / 3])
    run_uid = str(uuid.uuid4())
    units = []
    for i in range(n):
        mu = sample.mu_t(energy) + rng.normal(0, 2e-4, energy.size)
        units.append(UnitEnvelope(WorkUnit(run_uid, "spectrum", i, {"energy": energy, "mu": mu},
                                           {"sample": "Cu", "element": "Cu", "e0": 8979.0})))
    return run_uid, units


def wait_for_results(service, publisher, run_uid, timeout_s=120.0):
    assert publisher.flush(timeout_s), "publisher could not hand its units to the broker"
    assert service.wait_idle(timeout_s), f"broker not idle after {timeout_s} s: {service.status()}"
    client = service.tiled.client
    run = client[RESULTS_ROOT][run_uid]
    return {a: {u: run[a][u].metadata for u in run[a]} for a in run}


def assert_exactly_one_result_each(results, n_units):
    expected = {f"repeat_{i}" for i in range(n_units)}
    assert set(results) == {"xafs_normalize", "test_slow", "test_raises"}
    for analysis, units in results.items():
        assert set(units) == expected, analysis  # no unit missing, none twice
    assert all(md["status"] == "ok" for md in results["xafs_normalize"].values())
    assert all(md["status"] == "ok" for md in results["test_slow"].values())
    for md in results["test_raises"].values():
        assert md["status"] == "error" and "deliberate failure" in md["error"]


def test_analysis_that_raises_is_recorded_and_others_continue(service, publisher):
    run_uid, units = spectrum_units(3)
    for env in units:
        publisher.submit(env)
    assert publisher.flush(30)
    results = wait_for_results(service, publisher, run_uid)
    assert_exactly_one_result_each(results, 3)


def test_kill_9_of_a_worker_mid_unit(service, publisher, wait_for):
    run_uid, units = spectrum_units(8, seed=1)
    for env in units:
        publisher.submit(env)
    victim = wait_for(lambda: next((w for w in service.status()["workers"] if w["inflight"] > 0), None), 30)
    assert victim is not None, "no worker picked up a unit"
    os.kill(victim["pid"], signal.SIGKILL)
    results = wait_for_results(service, publisher, run_uid)
    assert_exactly_one_result_each(results, 8)
    assert service.status()["stats"]["redelivered"] >= 1
    # what serve does every second: the killed worker is started again
    i = next(i for i, proc in enumerate(service.worker_procs) if proc.pid == victim["pid"])
    assert service.supervise() == [f"worker w{i} exited with code -9; restarted"]
    assert service.worker_procs[i].pid != victim["pid"] and service.worker_procs[i].poll() is None


def test_broker_crash_and_restart_mid_run(service, publisher):
    run_uid, units = spectrum_units(12, seed=2)
    for env in units[:6]:
        publisher.submit(env)
    time.sleep(1.0)
    service.stop_broker(kill=True)  # SIGKILL: no chance to save anything beyond its disk store
    for env in units[6:]:
        publisher.submit(env)  # the broker is down: these wait in the publisher's outbox
    time.sleep(1.0)
    service.start_broker()
    assert publisher.flush(60)
    results = wait_for_results(service, publisher, run_uid, timeout_s=120)
    assert_exactly_one_result_each(results, 12)


def test_tiled_unreachable_for_10_s_mid_run(service, publisher):
    run_uid, units = spectrum_units(6, seed=3)
    for env in units[:2]:
        publisher.submit(env)
    assert service.wait_idle(60)
    old = service.tiled
    port, api_key, directory = old.server.port, old.api_key, old.server.directory.parent
    old.close()
    for env in units[2:]:
        publisher.submit(env)
    time.sleep(10.0)
    service.tiled = start_tiled_process(directory, port=port, api_key=api_key)
    results = wait_for_results(service, publisher, run_uid, timeout_s=120)
    assert_exactly_one_result_each(results, 6)


def test_much_slower_worker_does_not_lose_or_duplicate(service, publisher, wait_for):
    os.environ["XAFS_TEST_SLOW_WORKER"] = "slow"
    os.environ["XAFS_TEST_WORKER_TAG"] = "slow"
    joined = len(service.status()["workers"])
    try:
        slow = service.start_worker("slow")  # an extra worker, not one the service keeps alive
    finally:
        os.environ.pop("XAFS_TEST_WORKER_TAG")
    try:
        assert wait_for(lambda: len(service.status()["workers"]) > joined, 30)  # it joined
        run_uid, units = spectrum_units(12, seed=4)
        for env in units:
            publisher.submit(env)
        results = wait_for_results(service, publisher, run_uid, timeout_s=120)
        assert_exactly_one_result_each(results, 12)
        by_worker = [md["worker"] for md in results["test_slow"].values()]
        slow_share = sum(w.startswith("slow") for w in by_worker)
        assert slow_share <= 3, f"credit-based flow control should route around the slow worker: {by_worker}"
    finally:
        slow.terminate()
        slow.wait(10)


def test_malformed_and_oversized_messages_are_rejected_and_the_broker_keeps_running(service, publisher):
    ctx = zmq.Context.instance()
    before = service.status()["stats"]["rejected"]
    bad = ctx.socket(zmq.DEALER)
    bad.setsockopt(zmq.LINGER, 0)
    bad.connect(service.frontend)
    _, (good,) = spectrum_units(1, seed=5)
    header, *buffers = P.encode_unit(good, P.SUBMIT)[2:]
    wrong_size = P.encode_unit(good, P.SUBMIT)
    wrong_size[-1] = bytes(memoryview(wrong_size[-1]))[:-8]
    messages = [
        [b"garbage"],
        [b"NOTXSP", P.SUBMIT, header],
        [P.PROTOCOL, b"EXPLODE"],
        [P.PROTOCOL, P.SUBMIT, b"{not json"],
        [P.PROTOCOL, P.SUBMIT, P.dumps({"schema": 99})],
        [P.PROTOCOL, P.SUBMIT, header],  # header says arrays follow, none do
        wrong_size,
        [P.PROTOCOL, P.SUBMIT, header.replace(b'"<f8"', b'"|O"'), *buffers],
    ]
    replies = []
    for msg in messages:
        bad.send_multipart(msg)
        if bad.poll(5000):
            replies.append(bad.recv_multipart())
    assert len(replies) == len(messages)
    assert all(r[1] == P.REJECT for r in replies)
    reasons = [P.loads(r[2])["reason"] for r in replies]
    assert any("unknown protocol" in r for r in reasons) and any("bytes for shape" in r for r in reasons)
    # oversized: above max_message_bytes (4 MiB here) the peer is cut off before the broker reads it
    huge = UnitEnvelope(WorkUnit(str(uuid.uuid4()), "spectrum", 0, {"energy": np.zeros(1_000_000), "mu": np.zeros(1_000_000)}))
    bad.send_multipart(P.encode_unit(huge, P.SUBMIT))
    # a fake worker sending junk to the backend
    fake = ctx.socket(zmq.DEALER)
    fake.setsockopt(zmq.LINGER, 0)
    fake.connect(service.backend)
    fake.send_multipart([P.PROTOCOL, P.DONE, b"\xff\xfe"])
    fake.send_multipart([b"junk"])
    time.sleep(0.5)
    st = service.status()
    assert st["stats"]["rejected"] >= before + len(messages)
    assert st["stored"] == 0 or st["pending"] + st["inflight"] >= 0
    bad.close(0)
    fake.close(0)
    # still serving: a good unit goes through
    run_uid, units = spectrum_units(2, seed=6)
    for env in units:
        publisher.submit(env)
    results = wait_for_results(service, publisher, run_uid)
    assert_exactly_one_result_each(results, 2)
