"""Nothing is lost quietly: results that cannot be stored, a full outbox, a full broker store.

Full disks are real: small tmpfs file systems (mounting them needs root; the tests are skipped with the
reason otherwise). Real broker, worker and publisher; real Tiled in the slow test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from xafs_stream.analyses.registry import Analysis, Registry
from xafs_stream.config import BrokerConfig, WorkerConfig
from xafs_stream.core import AnalysisResult, UnitEnvelope, WorkUnit
from xafs_stream.transport.broker import Broker
from xafs_stream.transport.publisher import OutboxError, UnitPublisher, broker_status
from xafs_stream.worker import UnitHandler, Worker


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system of its own (tmpfs), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({out.stderr.strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    """Fill ``mount`` to the last byte with one file; returns it (delete it to free the space)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


class _Store:
    """Stands in for Tiled: refuses every write with HTTP 500 (as Tiled does on a full disk) while ``broken``."""

    def __init__(self):
        self.broken = True
        self.records = []
        self.refused = 0

    def write(self, record):
        if self.broken:
            self.refused += 1
            request = httpx.Request("PUT", "http://tiled/api/v1/table/full/x")
            raise httpx.HTTPStatusError("Internal Server Error", request=request,
                                        response=httpx.Response(500, request=request))
        self.records.append(record)


def _registry() -> Registry:
    registry = Registry()
    registry.add(Analysis("toy.sum", "spectrum", "1",
                          lambda unit, up, s: AnalysisResult(summary={"sum": float(np.sum(unit.arrays["mu"]))})))
    return registry


def _broker(store_dir: Path, **settings) -> tuple[Broker, threading.Thread]:
    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0", events="",
                                 store_dir=str(store_dir), heartbeat_s=0.2, **settings))
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    return broker, thread


def _worker(broker: Broker, store) -> Worker:
    worker = Worker(broker.backend_address, UnitHandler(store, _registry(), retry_s=0.01), WorkerConfig(credit=1),
                    BrokerConfig(heartbeat_s=0.2), name=f"w-{uuid.uuid4().hex[:6]}")
    threading.Thread(target=worker.run, daemon=True).start()
    return worker


def test_results_that_cannot_be_stored_keep_the_unit_queued_and_visible(tmp_path, wait_for, capsys):
    """Before: after the retries the unit was acknowledged without its results (one CRITICAL log line)."""
    broker, thread = _broker(tmp_path / "store", failed_retry_s=1.5, failed_retry_max_s=1.5)
    store = _Store()
    worker = _worker(broker, store)
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
    try:
        pub.submit(UnitEnvelope(WorkUnit("run-s", "spectrum", 0, {"mu": np.ones(3)})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["failing"] == 1, 30)
        status = broker_status(broker.frontend_address)
        (failing,) = status["failing_units"]
        assert failing["unit_id"] == "run-s:spectrum:0" and "could not be stored" in failing["reason"]
        assert "500" in failing["reason"] and status["stats"]["done"] == 0 and status["stored"] == 1
        # what an operator sees in a terminal (exit code 1: something is failing)
        from xafs_stream.cli.main import main

        assert main(["status", "--frontend", broker.frontend_address]) == 1
        shown = capsys.readouterr().out
        assert "1 failing" in shown and "failing: run-s:spectrum:0 (1x" in shown and "HTTP 500" in shown
        assert pub.flush(5)  # the producer may forget it: the broker holds it durably
        # retried after its back-off (and failing again); once Tiled takes results again (healed while the unit
        # waits for its next retry) it is done, with its real result
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["failed"] >= 2, 30)
        store.broken = False
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["done"] == 1, 30)
        status = broker_status(broker.frontend_address)
        assert status["failing"] == 0 and status["stored"] == 0
        assert [r.status for r in store.records] == ["ok"] and store.records[0].result.summary == {"sum": 3.0}
    finally:
        worker.stop()
        pub.close(1)
        broker.stop()
        thread.join(5)


def test_a_full_outbox_is_an_error_to_the_caller_and_everything_accepted_is_delivered(small_disk, tmp_path,
                                                                                      wait_for, caplog):
    """Before: the publisher's thread died on its first ACK (it could not mark the unit done on the full
    disk) and 307 units were stranded without a word."""
    other = small_disk / "other-data"
    other.write_bytes(b"\0" * (1 << 20))  # something else takes half the disk
    pub = UnitPublisher("tcp://127.0.0.1:1", small_disk / "outbox")  # no broker yet
    accepted = []
    with pytest.raises(OutboxError, match="not queued: outbox .* cannot take it"):
        for i in range(10_000):
            env = UnitEnvelope(WorkUnit("run-o", "spectrum", i, {"mu": np.full(2000, float(i))}))
            pub.submit(env)
            accepted.append(env.unit_id)
    _fill(small_disk)  # to the last byte: not even the outbox's "delivered" marks fit
    broker, thread = _broker(tmp_path / "store")
    store = _Store()
    store.broken = False
    worker = _worker(broker, store)
    pub.address = broker.frontend_address  # the broker appears
    try:
        assert wait_for(lambda: pub.stats["errors"] > 0, 30)  # it could not mark an acknowledged unit done ...
        assert pub._thread.is_alive()  # ... went on working, and said why:
        assert any(re.search("cannot mark .* delivered in the outbox: .*No space left", r.getMessage())
                   for r in caplog.records)
        other.unlink()  # the operator makes room
        assert wait_for(lambda: len(pub) == 0, 120)  # all handed over ...
        # ... and every accepted unit processed (at least once: results are idempotent)
        assert wait_for(lambda: {r.unit_id for r in store.records} == set(accepted), 120)
    finally:
        worker.stop()
        pub.close(1)
        broker.stop()
        thread.join(5)


def test_a_full_broker_store_answers_busy_and_the_broker_survives_a_restart_on_it(small_disk, tmp_path,
                                                                                  wait_for):
    """Before: the broker crashed instead of answering BUSY, and again on restart."""
    broker, thread = _broker(small_disk / "store", ack_after_done_s=0.0)
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
    try:
        for i in range(60):
            pub.submit(UnitEnvelope(WorkUnit("run-b", "spectrum", i, {"mu": np.full(8000, float(i))})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["store_errors"] > 0, 30)
        status = broker_status(broker.frontend_address)
        assert thread.is_alive() and pub.stats["busy"] > 0 and len(pub) > 0  # told BUSY: it keeps them
        stored = status["stored"]
        broker.stop()
        thread.join(5)
        # a restart on the full disk comes up with every stored unit
        broker, thread = _broker(small_disk / "store", ack_after_done_s=0.0)
        pub.address = broker.frontend_address
        assert broker_status(broker.frontend_address)["stored"] >= stored
        store = _Store()
        store.broken = False
        worker = _worker(broker, store)
        try:
            assert wait_for(lambda: len({r.unit_id for r in store.records}) == 60 and len(pub) == 0, 120)
        finally:
            worker.stop()
    finally:
        pub.close(1)
        broker.stop()
        thread.join(5)


def test_a_unit_held_for_a_quick_result_survives_a_full_store(small_disk, tmp_path, wait_for):
    """A unit is held in memory (not stored) while a worker is expected to finish it soon; when that wait is
    over and the disk is full, it stays held and is tried again (the soak found the broker ending here), and
    it is processed and acknowledged once the worker finishes."""
    gate = threading.Event()
    registry = Registry()
    registry.add(Analysis("toy.gated", "spectrum", "1",
                          lambda unit, up, s: AnalysisResult(summary={"open": gate.wait(30)})))
    _fill(small_disk)
    broker, thread = _broker(small_disk / "store", ack_after_done_s=0.3)
    store = _Store()
    store.broken = False
    worker = Worker(broker.backend_address, UnitHandler(store, registry, retry_s=0.01), WorkerConfig(credit=1),
                    BrokerConfig(heartbeat_s=0.2), name="w-gated")
    threading.Thread(target=worker.run, daemon=True).start()
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
    try:
        assert wait_for(lambda: broker_status(broker.frontend_address)["workers"], 10)
        pub.submit(UnitEnvelope(WorkUnit("run-d", "spectrum", 0, {"mu": np.ones(64)})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["store_errors"] >= 2, 30)
        assert thread.is_alive() and len(pub) == 1  # not acknowledged: the outbox keeps it too
        gate.set()
        assert wait_for(lambda: len(store.records) == 1 and len(pub) == 0, 30)
        assert thread.is_alive() and store.records[0].result.summary == {"open": True}
    finally:
        gate.set()
        worker.stop()
        pub.close(1)
        broker.stop()
        thread.join(5)


@pytest.mark.slow
def test_tiled_on_a_full_disk_keeps_the_unit_failing_until_there_is_room(small_disk, tmp_path, wait_for):
    """The real case: the embedded Tiled's disk fills up. The unit stays queued and failing (not done), and
    is stored once there is room again. Slow: Tiled's client retries each 500 for ~25 s."""
    from xafs_stream.storage.results import ResultStore
    from xafs_stream.storage.tiled_server import start_tiled_process

    shutil.rmtree(small_disk / "lost+found", ignore_errors=True)
    subprocess.run(["mount", "-o", "remount,size=48m", str(small_disk)], check=True)
    tiled = start_tiled_process(small_disk / "tiled")
    broker, thread = _broker(tmp_path / "store", failed_retry_s=1.0, failed_retry_max_s=2.0)
    store = ResultStore(tiled.client)
    store.write  # noqa: B018 - the results root exists before the disk fills
    worker = _worker(broker, store)
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
    try:
        filler = _fill(small_disk)
        pub.submit(UnitEnvelope(WorkUnit("run-t", "spectrum", 0, {"mu": np.ones(200_000)})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["failing"] == 1, 400)
        assert broker_status(broker.frontend_address)["stats"]["done"] == 0
        os.unlink(filler)
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["done"] == 1, 400)
        node = tiled.client["xafs_results/run-t/toy_sum/repeat_0"]
        assert node.metadata["status"] == "ok" and node.metadata["summary"] == {"sum": 200000.0}
    finally:
        worker.stop()
        pub.close(1)
        broker.stop()
        thread.join(5)
        tiled.close()
