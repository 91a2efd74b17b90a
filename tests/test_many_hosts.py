"""The service across hosts, by configuration only: the broker, a PostgreSQL-backed ``tiled serve`` and the
workers each in their own network namespace (their own address, as separate hosts would be), the RunEngine
in a fourth. CURVE keys on every ZeroMQ socket, the Tiled API key on every request. A second worker joins
after the first scan and the first one is killed (SIGKILL) after the second: every unit's result is stored
once, nothing lost. The worker that joins stores through a second ``tiled serve`` process on the same
PostgreSQL catalog, and both processes serve every result. Needs root, ``ip netns`` and the PostgreSQL server binaries; skipped with the reason
otherwise."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from xafs_stream.testing import postgres_bindir

TILED_KEY = "manyhostskey1"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    name = f"xafs-probe-{os.getpid()}"
    res = _ip("netns", "add", name, check=False)
    if res.returncode != 0:
        return f"ip netns add is not permitted here: {res.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


class Hosts:
    """A bridge in this namespace (the RunEngine's host, .1) and one namespace per host (.2, .3, ...)."""

    def __init__(self, names: list[str]):
        tag = os.getpid() % 100000
        self.subnet = f"10.{200 + tag % 50}.{(tag // 50) % 250}"
        self.bridge = f"xb{tag}"
        self.ns = {n: f"xafs-{tag}-{n}" for n in names}
        self.addr = {n: f"{self.subnet}.{i + 2}" for i, n in enumerate(names)}
        self.addr["here"] = f"{self.subnet}.1"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.addr['here']}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (name, ns) in enumerate(self.ns.items()):
            host_end, ns_end = f"xh{tag}{i}", f"xn{tag}{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[name]}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def run_in(self, name: str, argv: list[str], log: Path, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns[name], *argv], stdout=log.open("w"),
                                stderr=subprocess.STDOUT, **kw)

    def close(self) -> None:
        for ns in self.ns.values():
            # anything still running inside dies with its namespace's last reference only: kill it first
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_broker_tiled_and_workers_on_separate_hosts(tmp_path, wait_for):
    why = _can_make_namespaces()
    if why:
        pytest.skip(why)
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (Debian package postgresql)")
    pytest.importorskip("ophyd")
    from bluesky import RunEngine

    from xafs_stream import subscribe
    from xafs_stream.config import load_config
    from xafs_stream.plans import xafs_scan
    from xafs_stream.simulated_devices import make_beamline
    from xafs_stream.storage.layout import RESULTS_ROOT
    from xafs_stream.transport.publisher import broker_status
    from xafs_stream.transport.security import create_keys

    keys = tmp_path / "keys"
    create_keys(keys)
    hosts = Hosts(["broker", "tiled", "workers"])
    procs: list[subprocess.Popen] = []
    pgroot = Path(tempfile.mkdtemp(prefix="xafs-pg-", dir="/tmp"))
    try:
        b, t = hosts.addr["broker"], hosts.addr["tiled"]
        frontend, backend, events = f"tcp://{b}:5560", f"tcp://{b}:5561", f"tcp://{b}:5562"
        # --- the database and Tiled host: PostgreSQL (as its own user) and tiled serve on PostgreSQL
        shutil.chown(pgroot, "postgres")
        pgdata = pgroot / "data"
        subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/initdb", "-D", str(pgdata), "-A", "trust",
                        "-U", "tiled"], check=True, stdout=subprocess.DEVNULL)
        with (pgdata / "pg_hba.conf").open("a") as fh:  # the Tiled server reaches it on its own address
            fh.write(f"host all all {hosts.subnet}.0/24 trust\n")
        procs.append(hosts.run_in("tiled", ["runuser", "-u", "postgres", "--", f"{bindir}/postgres", "-D",
                                            str(pgdata), "-p", "5432", "-k", str(pgroot), "-h", t],
                                  tmp_path / "postgres.log"))
        assert wait_for(lambda: subprocess.run([f"{bindir}/pg_isready", "-h", t, "-p", "5432"],
                                               capture_output=True).returncode == 0, 60, poll_s=0.3), \
            "PostgreSQL did not start:\n" + (tmp_path / "postgres.log").read_text()[-3000:]
        subprocess.run([f"{bindir}/createdb", "-h", t, "-p", "5432", "-U", "tiled", "catalog"], check=True)
        pg = f"postgresql://tiled@{t}:5432/catalog"
        (tmp_path / "tiled-data").mkdir()
        procs.append(hosts.run_in("tiled", [sys.executable, "-m", "tiled", "serve", "catalog", pg, "--init",
                                            "--host", t, "--port", "8000", "-w", str(tmp_path / "tiled-data"),
                                            "-w", pg, "--api-key", TILED_KEY], tmp_path / "tiled.log"))
        import httpx

        def tiled_up(port: int = 8000) -> bool:
            try:
                return httpx.get(f"http://{t}:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(tiled_up, 120, poll_s=0.3), \
            "tiled serve did not start:\n" + (tmp_path / "tiled.log").read_text()[-3000:]
        # a second Tiled server process on the same PostgreSQL catalog and data (one process is the ceiling of
        # a deployment's writes): the worker that joins later stores through it
        procs.append(hosts.run_in("tiled", [sys.executable, "-m", "tiled", "serve", "catalog", pg,
                                            "--host", t, "--port", "8001", "-w", str(tmp_path / "tiled-data"),
                                            "-w", pg, "--api-key", TILED_KEY], tmp_path / "tiled2.log"))
        assert wait_for(lambda: tiled_up(8001), 120, poll_s=0.3), \
            "the second tiled serve did not start:\n" + (tmp_path / "tiled2.log").read_text()[-3000:]
        # --- one configuration file for everyone (each host reads the parts it needs)
        toml = tmp_path / "xafs-stream.toml"
        toml.write_text(f'[tiled]\nuri = "http://{t}:8000/api/v1"\napi_key = "{TILED_KEY}"\n'
                        f'[broker]\nfrontend = "{frontend}"\nbackend = "{backend}"\nevents = "{events}"\n'
                        f'heartbeat_s = 0.5\nworker_timeout_s = 3.0\n'
                        f'[security]\nkeys = "{keys}"\n[worker]\nanalyses = "xafs.normalize"\n'
                        f'[service]\ndata_dir = "{tmp_path / "broker-data"}"\n')
        ready = tmp_path / "broker.ready"
        procs.append(hosts.run_in("broker", [sys.executable, "-m", "xafs_stream.cli.main", "broker", "--config",
                                             str(toml), "--ready-file", str(ready)], tmp_path / "broker.log"))
        assert wait_for(ready.exists, 60, poll_s=0.3), \
            "the broker did not start:\n" + (tmp_path / "broker.log").read_text()[-3000:]

        def worker(name: str, *extra: str) -> subprocess.Popen:
            p = hosts.run_in("workers", [sys.executable, "-m", "xafs_stream.cli.main", "worker", "--config",
                                         str(toml), "--name", name, *extra], tmp_path / f"worker-{name}.log")
            procs.append(p)
            return p

        first = worker("wA")
        # --- the RunEngine's host
        RE = RunEngine({})
        uids: list[str] = []
        RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
        cfg = load_config(toml)
        session = subscribe(RE, cfg)
        bl = make_beamline(sample="Cu", seed=5, time_scale=0.02)
        regions = [[-60, 60, 2, "E"]]
        for i in range(3):
            RE(xafs_scan([bl.scaler], bl.dcm, regions, element="Cu", sample="Cu", repeats=2, dwell_s=0.2))
            if i == 0:
                worker("wB", "--tiled-uri", f"http://{t}:8001/api/v1")  # joins mid-run, stores via Tiled #2
            elif i == 1:
                first.send_signal(signal.SIGKILL)  # leaves without a word: its units go to wB
        session.flush()
        expected = {uid: {"repeat_0", "repeat_1", "merge"} for uid in uids}
        from tiled.client import from_uri

        client = from_uri(f"http://{t}:8000/api/v1", api_key=TILED_KEY)

        def stored() -> dict[str, set[str]]:
            out = {}
            if RESULTS_ROOT not in client:
                return out
            for uid in uids:
                try:
                    out[uid] = set(client[RESULTS_ROOT][uid]["xafs_normalize"])
                except KeyError:
                    out[uid] = set()
            return out

        wait_for(lambda: stored() == expected, 180, poll_s=0.3, what="every result")
        for uid in uids:
            assert client[uid].metadata["start"]["sample"] == "Cu"  # the raw run, written from the RE host
            for unit in expected[uid]:
                md = client[RESULTS_ROOT][uid]["xafs_normalize"][unit].metadata
                assert md["status"] == "ok", md.get("error")
        status = broker_status(frontend, keys=str(keys))
        assert status["stats"]["submitted"] == 9, json.dumps(status["stats"])  # 3 runs x (2 repeats + merge)
        assert status["pending"] == 0 and status["inflight"] == 0
        served_by = {client[RESULTS_ROOT][uid]["xafs_normalize"][u].metadata.get("worker", "")
                     for uid in uids for u in expected[uid]}
        session.close()
        assert any("wB" in w for w in served_by), served_by  # the worker that joined did take units
        # both Tiled processes serve the one catalog: the same results, whichever process wrote them
        second = from_uri(f"http://{t}:8001/api/v1", api_key=TILED_KEY)
        for uid in uids:
            for u in expected[uid]:
                a = client[RESULTS_ROOT][uid]["xafs_normalize"][u].metadata
                b = second[RESULTS_ROOT][uid]["xafs_normalize"][u].metadata
                assert a["worker"] == b["worker"] and a["summary"] == b["summary"]
    finally:
        _stop(procs)
        hosts.close()
        shutil.rmtree(pgroot, ignore_errors=True)
