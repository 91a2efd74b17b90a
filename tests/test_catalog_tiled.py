"""Queries, export and reports against a real embedded Tiled holding raw runs and analysis results.

The catalog (built once for this module, in its own Tiled server so other tests' runs do not interfere):

======  =======  =======  ============  =======  ===============================================
name    sample   element  mode          repeats  results
======  =======  =======  ============  =======  ===============================================
cu      Cu       Cu       transmission  2        xafs.normalize (repeat 0, merge), spm (merge) ok
fe2o3   Fe2O3    Fe       transmission  1        xafs.normalize (merge) ok, spm skipped (no paths),
                                                 bayes.xanes written by hand with K = 2
-- t_mid --
znse    ZnSe     Zn       transmission  1        none (XANES only)
feo     FeO      Fe       fluorescence  1        none (XANES only)
map     phantom  Fe       (map 1 x 2 tiles)      xafs.normalize_tile per tile
======  =======  =======  ============  =======  ===============================================

Truth used: Cu fcc first shell N = 12 at 2.556 Å; the Fe K edge at 7112 eV (Fe2O3 shifted up by a few eV);
the raw data and stored results as read directly from Tiled (not through the code under test).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from xafs_stream.analyses.registry import AnalysisResult
from xafs_stream.cli.main import main
from xafs_stream.core import ResultRecord
from xafs_stream.io import read_spectrum
from xafs_stream.storage.layout import RESULTS_ROOT, read_arrays
from xafs_stream.storage.results import ResultStore

EXAFS = [[-150, -30, 10, "E"], [-30, 40, 1, "E"], [3, 13, 0.1, "k"]]
XANES = [[-60, -15, 5, "E"], [-15, 45, 1, "E"]]
# a smaller SpM dictionary than the service default (R up to 3.0 Å: the first Cu shell only), for speed
# a paths table naming only Cu: the Fe2O3 run is then skipped (no path set configured for it)
SPM_FAST = {"spm": {"rmax": 3.0, "n_alphas": 15, "n_folds": 3, "paths": {"Cu": "packaged:cu_fcc_a3.615_feff6l"}}}


def _build(client) -> SimpleNamespace:
    from bluesky import RunEngine
    from xafs_stream.plans import mu_xafs_map, xafs_scan
    from xafs_stream.simulated_devices.beamline import make_beamline
    from xafs_stream.simulated_devices.phantom import default_map_energies

    from xafs_stream.analyses import default_registry
    from xafs_stream.storage.raw_writer import LiveTiledWriter
    from xafs_stream.worker.processing import process_unit
    from xafs_stream.worker.reprocess import derive_units

    RE = RunEngine({}, call_returns_result=False)
    writer = LiveTiledWriter(client, flush_interval_s=0.2)
    RE.subscribe(writer)
    starts: list[dict] = []
    RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    bl = make_beamline(sample="Cu", seed=3)
    registry = default_registry()
    store = ResultStore(client)
    uids: dict[str, str] = {}

    def scan(name, sample, element, regions, **kwargs):
        bl.load_sample(sample)
        RE(xafs_scan([bl.scaler], bl.dcm, regions, element=element, sample=sample, dwell_s=0.5, **kwargs))
        uids[name] = starts[-1]["uid"]

    def process(name, analyses_by_unit):
        writer.flush()
        for env in derive_units(client, uids[name]):
            if env.unit.index in analyses_by_unit:
                env.analyses = list(analyses_by_unit[env.unit.index])
                for record in process_unit(env, registry, SPM_FAST):
                    store.write(record)

    try:
        scan("cu", "Cu", "Cu", EXAFS, repeats=2)
        scan("fe2o3", "Fe2O3", "Fe", EXAFS, repeats=1)
        t_mid = time.time()
        scan("znse", "ZnSe", "Zn", XANES)
        scan("feo", "FeO", "Fe", XANES, mode="fluorescence")
        RE(mu_xafs_map(bl.mapdet, bl.dcm, bl.stage, list(default_map_energies(16)), n_tile_rows=1, n_tile_cols=2,
                       element="Fe", sample="phantom"))
        uids["map"] = starts[-1]["uid"]
        # Cu: repeat 1 left unanalysed on purpose (its XDI file then has no normalisation column)
        process("cu", {0: ["xafs.normalize"], "merge": ["xafs.normalize", "spm"]})
        process("fe2o3", {"merge": ["xafs.normalize", "spm"]})
        writer.flush()
        for env in derive_units(client, uids["map"]):
            env.analyses = ["xafs.normalize_tile"]
            for record in process_unit(env, registry):
                store.write(record)
        # a Bayesian result written by hand (the real analysis takes seconds): the known truth is K = 2
        store.write(ResultRecord(
            run_uid=uids["fe2o3"], unit_id=f"{uids['fe2o3']}:spectrum:merge", kind="spectrum", index="merge",
            analysis="bayes.xanes", version="test", status="ok",
            result=AnalysisResult(summary={"bayes.K": 2, "bayes.F.K1": 40.0, "bayes.F.K2": 31.5,
                                           "bayes.F_se.K1": 0.4, "bayes.F_se.K2": 0.3})))
    finally:
        writer.close()
    assert writer.errors == []
    return SimpleNamespace(uids=uids, t_mid=t_mid, starts={d["uid"]: d for d in starts})


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    from xafs_stream.storage.tiled_server import start_embedded_tiled

    handle = start_embedded_tiled(tmp_path_factory.mktemp("catalog"))
    try:
        ns = _build(handle.client)
        ns.client = handle.client
        ns.cli = ["--tiled-uri", handle.uri.split("?")[0], "--api-key", handle.api_key]
        yield ns
    finally:
        handle.close()


def names(cat, runs) -> set[str]:
    by_uid = {uid: name for name, uid in cat.uids.items()}
    return {by_uid[r.uid] for r in runs}


def find(cat, **kwargs) -> set[str]:
    from xafs_stream.client.catalog import find_runs

    return names(cat, find_runs(cat.client, **kwargs))


# ------------------------------------------------------------------------------------------------ queries


def test_query_by_run_metadata(cat):
    assert find(cat) == {"cu", "fe2o3", "znse", "feo", "map"}
    assert find(cat, element="Fe") == {"fe2o3", "feo", "map"}
    assert find(cat, element="cu") == {"cu"}  # element symbols are normalised
    assert find(cat, sample="ZnSe") == {"znse"}
    assert find(cat, mode="fluorescence") == {"feo"}
    assert find(cat, kind="map") == {"map"}
    assert find(cat, sample="fe*") == {"fe2o3", "feo"}  # wildcard, case-insensitive
    assert find(cat, element="Fe", kind="spectrum", edge="K") == {"fe2o3", "feo"}
    assert find(cat, where=["exit_status==success", "repeats==2"]) == {"cu"}
    assert find(cat, sample="Ni") == set()


def test_query_by_results(cat):
    # Cu fcc: first shell N = 12 at 2.556 Å
    assert find(cat, where=["spm.shell1.N>10"]) == {"cu"}
    assert find(cat, where=["spm.shell1.R>2.50", "spm.shell1.R<2.60", "spm.shell1.pair==Cu-Cu"]) == {"cu"}
    assert find(cat, where=["status.spm==ok"]) == {"cu"}
    assert find(cat, where=["status.spm==skipped"]) == {"fe2o3"}  # no FEFF paths configured for it
    assert find(cat, where=["status.spm!=ok"]) == {"fe2o3"}
    # Fe K edge 7112 eV (Fe2O3: Fe3+ shifts E0 up by a few eV); Cu K 8979 eV
    assert find(cat, where=["e0>7105", "e0<7140"]) == {"fe2o3"}
    assert find(cat, where=["e0>8970", "e0<8990"]) == {"cu"}
    assert find(cat, where=["has_exafs==true"]) == {"cu", "fe2o3"}
    assert find(cat, where=["bayes.K==2"]) == {"fe2o3"}
    assert find(cat, where=["bayes.K==3"]) == set()
    assert find(cat, element="Fe", where=["status.xafs.normalize==ok"]) == {"fe2o3"}
    # per-tile results are not summarised on the run node (only the whole map is): no tile status to query
    assert find(cat, where=["status.xafs_normalize_tile==ok"]) == set()


def test_query_by_date(cat):
    assert find(cat, since=cat.t_mid) == {"znse", "feo", "map"}
    assert find(cat, until=cat.t_mid) == {"cu", "fe2o3"}
    assert find(cat, since="1h") == set(cat.uids)
    assert find(cat, until="2000-01-01") == set()
    assert find(cat, since=cat.t_mid, where=["spm.shell1.N>10"]) == set()


def test_runs_come_newest_first_with_their_results(cat):
    from xafs_stream.client.catalog import find_runs

    runs = find_runs(cat.client)
    times = [r.time for r in runs]
    assert times == sorted(times, reverse=True)
    assert [r.uid for r in find_runs(cat.client, limit=2)] == [cat.uids["map"], cat.uids["feo"]]
    (cu,) = find_runs(cat.client, sample="Cu")
    stored = cat.client[RESULTS_ROOT][cat.uids["cu"]].metadata
    assert cu.summary == stored["summary"] and cu.status == stored["status"]
    assert cu.get("spm.shell1.R") == pytest.approx(2.556, abs=0.03)
    assert cu.get("status.spm") == "ok"
    from datetime import datetime

    assert datetime.fromisoformat(cu.start_iso).timestamp() == pytest.approx(cu.time, abs=1.0)
    (znse,) = find_runs(cat.client, sample="ZnSe")
    assert znse.summary == {} and znse.status == {} and znse.exit_status == "success"


def test_query_cli_json_and_table(cat, capsys):
    assert main(["query", *cat.cli, "--where", "spm.shell1.N>10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["uid"] for r in out] == [cat.uids["cu"]]
    assert out[0]["summary"]["spm"]["shell1"]["pair"] == "Cu-Cu"
    assert out[0]["status"]["spm"] == "ok"

    assert main(["query", *cat.cli, "--element", "Fe", "--columns", "e0,status.spm"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "3 runs"
    assert lines[0].split()[-2:] == ["e0", "status.spm"]
    shown = {line.split()[0] for line in lines[1:-1]}
    assert shown == {cat.uids[n][:8] for n in ("fe2o3", "feo", "map")}


def test_query_cli_bad_conditions_are_one_line_errors(cat, capsys):
    assert main(["query", *cat.cli, "--where", "bayes.K==two"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bayes.K" in err and "number" in err
    assert main(["query", *cat.cli, "--where", "spm.shell1.Q>3"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'spm.shell1.Q'" in err and "spm.shell<i>.N" in err


# ------------------------------------------------------------------------------------------------- export


def _events(cat, name):
    table = cat.client[cat.uids[name]]["primary"].base["internal"].read()
    return table.sort_values("seq_num").reset_index(drop=True)


def test_export_xdi_round_trip(cat, tmp_path, capsys):
    uid = cat.uids["cu"]
    assert main(["export", uid[:8], *cat.cli, "-o", str(tmp_path)]) == 0
    paths = capsys.readouterr().out.split()
    assert [p.rsplit("_", 1)[-1] for p in paths] == ["repeat0.xdi", "repeat1.xdi", "merge.xdi"]
    events = _events(cat, "cu")
    results = cat.client[RESULTS_ROOT][uid]["xafs_normalize"]
    for rep in (0, 1):
        f = read_spectrum(paths[rep])
        raw = events[events["repeat"] == rep]
        np.testing.assert_allclose(f.energy, raw["dcm"], rtol=1e-9)
        np.testing.assert_allclose(f.columns["i0"], raw["scaler_i0"], rtol=1e-9)
        np.testing.assert_allclose(f.columns["itrans"], raw["scaler_it"], rtol=1e-9)
        np.testing.assert_allclose(f.columns["irefer"], raw["scaler_iref"], rtol=1e-9)
        np.testing.assert_allclose(f.mu, np.log(raw["scaler_i0"] / raw["scaler_it"]), rtol=1e-8, atol=1e-9)
        if rep == 0:
            norm = read_arrays(results["repeat_0"])["norm"]
            np.testing.assert_allclose(f.columns["normtrans"], norm, rtol=1e-8, atol=1e-9)
        else:  # not analysed: measured columns only
            assert "normtrans" not in f.columns and "XafsStream.e0_found" not in f.metadata
        md = f.metadata
        assert (md["Element.symbol"], md["Element.edge"], md["Sample.name"]) == ("Cu", "K", "Cu")
        assert md["XafsStream.run_uid"] == uid and md["XafsStream.repeat"] == str(rep)
        assert float(md["Scan.edge_energy"].split()[0]) == pytest.approx(8979.0)
        from datetime import datetime

        assert datetime.fromisoformat(md["Scan.start_time"]).timestamp() == pytest.approx(
            cat.starts[uid]["time"], abs=1.0)
    merged = read_spectrum(paths[2])
    stored = read_arrays(results["merge"])
    np.testing.assert_allclose(merged.energy, stored["energy"], rtol=1e-9)
    np.testing.assert_allclose(merged.mu, stored["mu"], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(merged.columns["normtrans"], stored["norm"], rtol=1e-8, atol=1e-9)
    assert merged.metadata["XafsStream.n_repeats_merged"] == "2"


def test_export_never_overwrites_and_reports_bad_requests(cat, tmp_path, capsys):
    uid = cat.uids["znse"]
    assert main(["export", uid, *cat.cli, "-o", str(tmp_path), "--repeat", "0"]) == 0
    (path,) = [p for p in tmp_path.iterdir()]
    before = path.read_bytes()
    capsys.readouterr()
    assert main(["export", uid, *cat.cli, "-o", str(tmp_path), "--repeat", "0"]) == 2
    assert "not overwriting" in capsys.readouterr().err
    assert path.read_bytes() == before
    for args, message in ((["--repeat", "merge"], "no merged xafs.normalize result"),
                          (["--repeat", "3"], "no repeat 3"),
                          (["--repeat", "last"], "repeat must be")):
        assert main(["export", uid, *cat.cli, "-o", str(tmp_path / "x"), *args]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", cat.uids["map"], *cat.cli, "-o", str(tmp_path), "--format", "xdi"]) == 2
    assert "XDI holds single spectra" in capsys.readouterr().err
    assert main(["export", "ffffffffff", *cat.cli, "-o", str(tmp_path)]) == 2
    assert "no run 'ffffffffff'" in capsys.readouterr().err


def test_export_map_hdf5_reassembles_the_tiles(cat, tmp_path, capsys):
    from xafs_stream.worker.reprocess import derive_units

    uid = cat.uids["map"]
    assert main(["export", uid, *cat.cli, "-o", str(tmp_path)]) == 0
    (path,) = capsys.readouterr().out.split()
    start = cat.starts[uid]
    # truth: the tile units built by the live callbacks' MapTileBuilder from the same raw run
    units = [env.unit for env in derive_units(cat.client, uid)]
    assert len(units) == 2
    tile_results = cat.client[RESULTS_ROOT][uid]["xafs_normalize_tile"]
    with h5py.File(path, "r") as h5:
        data = h5["entry/data"]
        assert data.attrs["signal"] == "optical_density"
        od = data["optical_density"][()]
        assert od.shape == (16, start["map_ny"], start["map_nx"])
        np.testing.assert_allclose(data["energy"][()], start["energies"])
        assert data["measured"][()].all()
        e0_map = h5["entry/results/xafs_normalize_tile/map/e0"][()]
        assert json.loads(h5["entry/xafs_stream/start"][()])["uid"] == uid
    for unit in units:
        y0, x0 = unit.metadata["y0"], unit.metadata["x0"]
        ny, nx = unit.arrays["stack"].shape[1:]
        np.testing.assert_allclose(od[:, y0:y0 + ny, x0:x0 + nx], unit.arrays["stack"], rtol=1e-6)
        stored = read_arrays(tile_results[f"tile_{unit.index}"])["e0"]
        np.testing.assert_allclose(e0_map[y0:y0 + ny, x0:x0 + nx], stored)


def test_export_events_csv(cat, tmp_path, capsys):
    import pandas as pd

    uid = cat.uids["feo"]
    assert main(["export", uid, *cat.cli, "-o", str(tmp_path), "--format", "csv"]) == 0
    csv_path, json_path = capsys.readouterr().out.split()
    table = pd.read_csv(csv_path)
    events = _events(cat, "feo")
    assert list(table.columns) == list(events.columns)
    np.testing.assert_allclose(table["scaler_ifluor"], events["scaler_ifluor"], rtol=1e-12)
    side = json.loads(Path(json_path).read_text())
    assert side["start"]["uid"] == uid and side["start"]["mode"] == "fluorescence"


# ------------------------------------------------------------------------------------------------- report


def test_report_of_a_spectrum_run(cat, tmp_path, capsys):
    from xafs_stream.client.report import format_pm

    uid = cat.uids["cu"]
    assert main(["report", uid[:10], *cat.cli, "-o", str(tmp_path), "--png"]) == 0
    page = capsys.readouterr().out.strip()
    text = Path(page).read_text(encoding="utf-8")
    shell = cat.client[RESULTS_ROOT][uid].metadata["summary"]["spm"]["shell1"]
    assert format_pm(shell["R"], shell["R_err"]) in text
    assert format_pm(shell["N"], shell["N_err"]) in text
    assert "Cu-Cu" in text and uid in text and "packaged:cu_fcc_a3.615_feff6l" in text
    assert "http://" not in text and "https://" not in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs and all(f'src="{name}"' in text for name in pngs)
    assert all((tmp_path / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in pngs)


def test_report_of_a_map_and_of_an_unanalysed_run(cat, tmp_path, capsys):
    assert main(["report", "-1", *cat.cli, "-o", str(tmp_path)]) == 0  # -1: the newest run, the map
    text = Path(capsys.readouterr().out.strip()).read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "xafs.normalize_tile" in text and cat.uids["map"] in text
    assert list(tmp_path.glob("*.png")) == []  # one self-contained HTML by default
    assert main(["report", cat.uids["znse"], *cat.cli, "-o", str(tmp_path)]) == 0
    text = Path(capsys.readouterr().out.strip()).read_text(encoding="utf-8")
    assert "No analysis results stored" in text and "ZnSe" in text


def test_the_public_reader_gives_unpadded_arrays_a_dataset_and_the_summary(cat):
    """``xafs_stream.results.read``: the arrays as the analysis made them (no NaN padding), its summary and
    verdict, an xarray Dataset on the shared axes; and a plain Tiled client can tell padding from data from
    the node's metadata alone (``table_lengths``)."""
    from xafs_stream import results

    uid = cat.uids["cu"]
    norm = results.read(cat.client, uid, "xafs.normalize")
    assert norm.status == "ok" and norm.verdict in ("ok", "warn")
    a = norm.arrays
    assert a["energy"].size == a["mu"].size and a["k"].size == a["chi"].size != a["energy"].size
    assert np.all(np.isfinite(a["chi"])) and np.all(np.isfinite(a["energy"]))
    assert norm.summary["e0"] == pytest.approx(8979.0, abs=2)
    ds = norm.dataset()
    assert ds["chi"].dims == ("k",) and ds["mu"].dims == ("energy",) and ds.attrs["verdict"] == norm.verdict
    spm = results.read(cat.client, uid, "spm")
    assert spm.summary["shell1.R"] == pytest.approx(2.54, abs=0.03) and spm.params["path_set"]
    assert "merge" in results.units(cat.client, uid, "xafs.normalize")
    with pytest.raises(KeyError):
        results.read(cat.client, uid, "bayes.xanes", "repeat_99")
    # the plain client: metadata says which rows are data
    from xafs_stream.storage.layout import RESULTS_ROOT

    node = cat.client[RESULTS_ROOT][uid]["xafs_normalize"]["merge"]
    lengths = node.metadata["table_lengths"]
    frame = node.read()
    assert len(frame) > lengths["chi"] and np.isnan(frame["chi"].to_numpy()[lengths["chi"]:]).all()
    assert np.array_equal(frame["chi"].to_numpy()[: lengths["chi"]], a["chi"])
