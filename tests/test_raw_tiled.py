"""Raw runs in a real embedded Tiled server: written live by TiledWriter, readable while running."""

import subprocess
import sys
import time

import numpy as np
import pytest
import xraydb
from xafs_stream.plans import mu_xafs_map, xafs_scan
from xafs_stream.simulated_devices.phantom import default_map_energies

from xafs_stream.engines.xafs import find_e0
from xafs_stream.storage.raw_writer import LiveTiledWriter


@pytest.fixture
def writer(tiled, RE):
    w = LiveTiledWriter(tiled.client, flush_interval_s=0.2)
    RE.subscribe(w)
    yield w
    w.close()


def _table(run):
    return run["primary"].base["internal"].read()


def test_cu_scan_in_tiled_has_its_edge_at_the_cu_k_edge(tiled, RE, beamline, writer, collect):
    RE(xafs_scan([beamline.scaler], beamline.dcm, element="Cu", sample="Cu", repeats=1, dwell_s=0.5))
    writer.flush()
    uid = collect[0][1]["uid"]
    run = tiled.client[uid]
    assert run.metadata["start"]["element"] == "Cu"
    assert run.metadata["stop"]["exit_status"] == "success"
    df = _table(run)
    assert len(df) == collect[0][1]["n_points"]
    energy = df["dcm"].to_numpy()
    mu = np.log(df["scaler_i0"].to_numpy() / df["scaler_it"].to_numpy())
    e0 = find_e0(energy, mu)
    assert abs(float(np.squeeze(e0)) - xraydb.xray_edge("Cu", "K").energy) < 1.0
    assert writer.errors == []


def test_raw_run_visible_while_running(tiled, RE, beamline, writer):
    seen = {}

    def peek(name, doc):
        if name == "event" and doc["seq_num"] == 40:
            writer.flush()
            run = tiled.client[doc_uid[0]]
            seen["rows"] = len(_table(run))
            seen["stopped"] = "stop" in run.metadata

    doc_uid = []
    RE.subscribe(lambda n, d: doc_uid.append(d["uid"]) if n == "start" else None)
    RE.subscribe(peek)
    RE(xafs_scan([beamline.scaler], beamline.dcm, [[-50, 50, 1, "E"]], element="Cu", dwell_s=0.1))
    # peek ran after the writer received event 40 (subscription order), so all 40 rows are written
    assert seen == {"rows": 40, "stopped": False}


@pytest.mark.parametrize("order", ["tile-outer", "energy-outer"])
def test_map_run_stacks_reassemble_into_the_phantom(tiled, RE, beamline, writer, collect, order):
    energies = default_map_energies(16)
    RE(mu_xafs_map(beamline.mapdet, beamline.dcm, beamline.stage, list(energies), n_tile_rows=2, n_tile_cols=2,
                   element="Fe", order=order))
    writer.flush()
    start = collect[0][1]
    run = tiled.client[start["uid"]]
    df = _table(run)
    images = run["primary"]["mapdet_image"].read()
    assert images.shape == (16 * 4, 16, 16)
    od = np.full((len(energies), start["map_ny"], start["map_nx"]), np.nan)
    for row, image in zip(df.itertuples(), images):
        y0, x0 = row.tile_row * start["tile_ny"], row.tile_col * start["tile_nx"]
        od[row.energy_index, y0:y0 + 16, x0:x0 + 16] = np.log(row.mapdet_i0 / image)
    assert not np.isnan(od).any()
    truth = np.stack([beamline.phantom.absorption_at(e, slice(0, 32), slice(0, 32)) for e in energies])
    # OD = μt + a constant (detector efficiencies and pixel count): remove it per energy
    diff = (od - od.mean(axis=(1, 2), keepdims=True)) - (truth - truth.mean(axis=(1, 2), keepdims=True))
    assert np.abs(diff).max() < 0.05
    assert np.corrcoef(od[-1].ravel(), truth[-1].ravel())[0, 1] > 0.99


def test_embedded_server_keeps_its_table_storage_in_wal_mode(tiled):
    """Readers of a table must not block its writer (live readers poll while raw events are appended).

    Read in another process: the server (adbc's own SQLite) has the file open in this one, and closing any
    descriptor of a file drops all of this process's POSIX locks on it, the server's too (seen: "disk I/O
    error" on the session server's later table reads when this test ran before the dashboard's)."""
    check = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "print(c.execute('PRAGMA journal_mode').fetchone()[0]); c.close()")
    out = subprocess.run([sys.executable, "-c", check, str(tiled.server.directory / "tables.sqlite")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "wal", out.stderr


def test_stop_is_written_a_moment_late_unless_flushed(tiled, RE, beamline):
    """A run's stop (its last rows and stop metadata) waits ``stop_delay_s`` so the run's last results are
    stored first; an explicit flush writes it at once."""
    writer = LiveTiledWriter(tiled.client, stop_delay_s=30.0)
    token = RE.subscribe(writer)
    try:
        (uid,) = RE(xafs_scan([beamline.scaler], beamline.dcm, [[-20, 20, 10, "E"]], element="Cu", sample="Cu",
                              dwell_s=0.1))
        time.sleep(1.0)
        assert tiled.client[uid].metadata.get("stop") is None  # held back
        writer.flush(timeout_s=10)  # would time out if it waited the 30 s
        assert tiled.client[uid].metadata["stop"]["exit_status"] == "success"
    finally:
        RE.unsubscribe(token)
        writer.close()


def test_raw_appends_wait_while_a_units_results_are_stored(tiled, RE):
    """After ``hold()`` (a unit was just sent), no table append for ``hold_s`` (less one flush interval: a
    flush already due is postponed by at most ``hold_s``); then the rows come, none lost."""
    from xafs_stream.simulated_devices.beamline import make_beamline

    beamline = make_beamline(sample="Cu", seed=1, time_scale=1.0)  # real dwell: 0.1 s per point
    writer = LiveTiledWriter(tiled.client, flush_interval_s=0.1, hold_s=1.5, stop_delay_s=0)
    appends: list[float] = []
    hold_at: list[float] = []

    def note(request):
        if request.method == "PATCH" and "/table/partition/" in request.url.path:
            appends.append(time.monotonic())

    def hold_at_event_5(name, doc):
        if name == "event" and doc["seq_num"] == 5:
            writer.hold()
            hold_at.append(time.monotonic())

    tiled.client.context.http_client.event_hooks["request"].append(note)
    tokens = [RE.subscribe(writer), RE.subscribe(hold_at_event_5)]
    try:
        t0 = time.monotonic()
        (uid,) = RE(xafs_scan([beamline.scaler], beamline.dcm, [[-12, 12, 1, "E"]], element="Cu", sample="Cu",
                              dwell_s=0.1))
        assert time.monotonic() - t0 > 2.2  # the scan outlasts the hold, so appends were due during it
        writer.flush(timeout_s=10)
        held = [t for t in appends if hold_at[0] + 0.05 < t < hold_at[0] + 1.5 - 0.1 - 0.05]
        assert held == [] and any(t < hold_at[0] for t in appends) and any(t > hold_at[0] + 1.4 for t in appends)
        assert len(_table(tiled.client[uid])) == 25
    finally:
        tiled.client.context.http_client.event_hooks["request"].remove(note)
        for token in tokens:
            RE.unsubscribe(token)
        writer.close()


def test_a_raw_run_opens_as_a_databroker_bluesky_run(tiled, RE, beamline, writer, collect):
    """How facility users read runs: a fresh Tiled client (databroker[client]'s BlueskyRun plugin, a declared
    dependency) gives ``client[uid].primary.read()`` as an xarray Dataset."""
    pytest.importorskip("bluesky_tiled_plugins")
    from tiled.client import from_uri

    RE(xafs_scan([beamline.scaler], beamline.dcm, element="Cu", sample="Cu", repeats=1, dwell_s=0.2))
    writer.flush()
    uid = collect[0][1]["uid"]
    run = from_uri(tiled.uri)[uid]
    assert type(run).__name__.startswith("BlueskyRun")
    ds = run.primary.read()
    assert type(ds).__name__ == "Dataset"
    assert ds["dcm"].size == collect[0][1]["n_points"] and "scaler_i0" in ds
    mu = np.log(ds["scaler_i0"].values / ds["scaler_it"].values)
    assert abs(float(np.squeeze(find_e0(ds["dcm"].values, mu))) - 8979.0) < 1.0
