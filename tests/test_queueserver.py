"""The plans and the simulated beamline as a bluesky-queueserver profile: a real ``start-re-manager`` (with
redis-server) runs ``xafs_scan``, ``mu_xafs_map`` and ``xafs_scan_adaptive`` submitted through bluesky-queueserver-api, and their
results are found in the running service's Tiled."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from xafs_stream.testing import free_port


def _stop(proc: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_xafs_scan_and_mu_xafs_map_from_the_queue(tmp_path, wait_for):
    pytest.importorskip("bluesky_queueserver", reason="bluesky-queueserver is not installed")
    pytest.importorskip("bluesky_queueserver_api", reason="bluesky-queueserver-api is not installed")
    redis = shutil.which("redis-server")
    manager = Path(sys.executable).parent / "start-re-manager"
    if redis is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    if not manager.exists():
        pytest.skip("start-re-manager is not installed")
    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    from xafs_stream.cli.queue_profile import write_profile
    from xafs_stream.service_info import read_info

    toml = tmp_path / "xafs-stream.toml"
    toml.write_text(f'[service]\ndata_dir = "{tmp_path / "data"}"\nworkers = 1\n'
                    f'[broker]\nfrontend = "tcp://127.0.0.1:{free_port()}"\n'
                    f'backend = "tcp://127.0.0.1:{free_port()}"\n'
                    f'events = "tcp://127.0.0.1:{free_port()}"\n[dashboard]\nenabled = false\n')
    profile = write_profile(tmp_path / "profile", toml)
    rport, control, info = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    RM = None
    try:
        procs.append(subprocess.Popen([redis, "--port", str(rport), "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        serve = subprocess.Popen([sys.executable, "-m", "xafs_stream.cli.main", "serve", "--config", str(toml)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(serve)
        wait_for(lambda: read_info(tmp_path / "data") is not None, 120, poll_s=0.3, what="serve")
        procs.append(subprocess.Popen(
            [str(manager), "--startup-dir", str(profile),
             "--user-group-permissions", str(profile / "user_group_permissions.yaml"),
             "--existing-plans-devices", str(profile / "existing_plans_and_devices.yaml"),
             "--update-existing-plans-devices", "ENVIRONMENT_OPEN",
             "--redis-addr", f"localhost:{rport}", "--redis-name-prefix", f"xafs{rport}",
             "--zmq-control-addr", f"tcp://127.0.0.1:{control}", "--zmq-info-addr", f"tcp://127.0.0.1:{info}",
             "--use-ipython-kernel", "OFF", "--console-output", "ON"],  # the log explains a failed environment
            stdout=(tmp_path / "re-manager.log").open("w"), stderr=subprocess.STDOUT, cwd=tmp_path))
        RM = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{control}", zmq_info_addr=f"tcp://127.0.0.1:{info}")
        wait_for(lambda: _ok(RM.status), 60, poll_s=0.3, what="the RE manager")
        RM.environment_open()
        RM.wait_for_idle(timeout=180)
        assert RM.status()["worker_environment_exists"], (tmp_path / "re-manager.log").read_text()[-3000:]
        RM.item_add(BPlan("xafs_scan", ["scaler"], "dcm", element="Cu", sample="Cu foil", repeats=1, dwell_s=0.2))
        from xafs_stream.simulated_devices.phantom import default_map_energies

        energies = [float(e) for e in default_map_energies(16)]
        RM.item_add(BPlan("mu_xafs_map", "mapdet", "dcm", "stage", energies, n_tile_rows=1, n_tile_cols=2,
                          element="Fe", sample="phantom"))
        RM.item_add(BPlan("xafs_scan_adaptive", ["scaler"], "dcm", element="Cu", sample="Cu foil",
                          target={"e0": 0.1}))
        RM.queue_start()
        RM.wait_for_idle(timeout=300)
        history = RM.history_get()["items"]
        assert [h["result"]["exit_status"] for h in history] == ["completed"] * 3, history
        uids = [h["result"]["run_uids"][0] for h in history]
        # the results in the service's Tiled
        from xafs_stream import results

        info_json = read_info(tmp_path / "data")
        from tiled.client import from_uri

        client = from_uri(info_json["tiled_uri"], api_key=info_json["api_key"])

        def stored(uid: str, analysis: str, unit: str) -> bool:
            try:
                return results.read(client, uid, analysis, unit).status == "ok"
            except KeyError:
                return False

        wait_for(lambda: stored(uids[0], "xafs.normalize", "merge"), 120, poll_s=0.3,
                 what="the scan's normalisation")
        wait_for(lambda: stored(uids[1], "imaging.map", "map"), 120, poll_s=0.3, what="the map")
        assert abs(results.read(client, uids[0], "xafs.normalize").summary["e0"] - 8979.0) < 2.0
        # the adaptive scan's decisions, as stored with its raw run
        adaptive = client[uids[2]]
        assert adaptive.metadata["stop"]["reason"].startswith("targets met"), adaptive.metadata["stop"]
        assert "adaptive" in adaptive
    finally:
        if RM is not None:
            try:
                RM.environment_close()
                RM.wait_for_idle(timeout=60)
            except Exception:
                pass
            RM.close()
        for proc in reversed(procs):
            _stop(proc)


def _ok(status) -> bool:
    try:
        status()
        return True
    except Exception:
        return False
