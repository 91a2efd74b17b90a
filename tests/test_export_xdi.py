"""XDI export of spectra from an in-memory run (no Tiled): columns, metadata, repeats, errors.

Truth: the packaged Cu foil spectrum (APS 13-ID, XDI), whose own ``mutrans`` column is ln(i0/itrans), and
results computed by the ``xafs.normalize`` analysis itself.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from xafs_stream.analyses.preprocess import normalize_spectrum
from xafs_stream.client.catalog import RunData, StoredResult
from xafs_stream.data import SPECTRA_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.client.export import export_run, parse_repeat, xdi_spectra
from xafs_stream.io import read_spectrum
from xafs_stream.storage.layout import nest_summary
from xafs_stream.core import WorkUnit

CU = read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")
T0 = 1795600000.0


def make_run(repeats: int = 1, *, mode: str = "transmission", sample: str = "Cu foil", element: str | None = "Cu"):
    n = CU.energy.size
    rows = []
    for rep in range(repeats):
        frame = pd.DataFrame({"seq_num": np.arange(n) + rep * n + 1, "time": T0 + np.arange(n) + rep * n,
                              "dcm": CU.energy + 0.1 * rep, "scaler_i0": CU.columns["i0"],
                              "scaler_it": CU.columns["itrans"], "scaler_ifluor": 0.02 * CU.columns["i0"] * CU.mu,
                              "repeat": rep})
        rows.append(frame)
    start = {"uid": "a1b2c3d4-0000-4000-8000-000000000001", "time": T0, "scan_id": 7, "plan_name": "xafs_scan",
             "xafs_kind": "spectrum", "sample": sample, "edge": "K", "e0": 8979.0, "mode": mode,
             "energy_key": "dcm", "repeats": repeats, "regions": [[-200, -30, 10, "E"]],
             "channels": {"i0": "scaler_i0", "it": "scaler_it", "ifluor": "scaler_ifluor"}}
    if element:
        start["element"] = element
    stop = {"exit_status": "success", "time": T0 + 2 * n * repeats}
    return RunData(uid=start["uid"], start=start, stop=stop, events=pd.concat(rows, ignore_index=True),
                   configuration={"dcm_d_spacing": 3.13553})


def add_result(run: RunData, unit: str, energy: np.ndarray, mu: np.ndarray) -> StoredResult:
    res = normalize_spectrum(WorkUnit(run.uid, "spectrum", 0, {"energy": energy, "mu": mu}, {"e0": 8979.0}), {}, {})
    stored = StoredResult("xafs_normalize", unit, {"analysis": "xafs.normalize", "version": "1.0", "status": "ok",
                                                   "summary": nest_summary(res.summary)}, _arrays=res.arrays)
    run.results.setdefault("xafs_normalize", {})[unit] = stored
    return stored


def test_repeat_round_trips_with_xdi_labels_and_metadata(tmp_path):
    run = make_run()
    (path,) = export_run(run, tmp_path)
    assert path.name == "Cu_foil_7_a1b2c3d4_repeat0.xdi"
    back = read_spectrum(path)
    assert list(back.columns) == ["energy", "i0", "itrans", "ifluor", "mutrans"]
    np.testing.assert_allclose(back.energy, CU.energy, rtol=1e-9)
    np.testing.assert_allclose(back.columns["i0"], CU.columns["i0"], rtol=1e-9)
    np.testing.assert_allclose(back.columns["itrans"], CU.columns["itrans"], rtol=1e-9)
    # μ = ln(i0/itrans): the published file's own mutrans column (8 digits)
    np.testing.assert_allclose(back.mu, CU.columns["mutrans"], atol=2e-7)
    md = back.metadata
    assert md["Element.symbol"] == "Cu" and md["Element.edge"] == "K" and md["Sample.name"] == "Cu foil"
    assert md["Mono.d_spacing"] == "3.13553" and md["Scan.edge_energy"] == "8979 eV"
    assert datetime.fromisoformat(md["Scan.start_time"]).timestamp() == T0
    assert datetime.fromisoformat(md["Scan.end_time"]).timestamp() == run.stop["time"]
    assert md["Detector.i0"] == "scaler_i0" and md["Detector.it"] == "scaler_it"
    assert md["XafsStream.run_uid"] == run.uid and md["XafsStream.repeat"] == "0"
    assert md["XafsStream.exit_status"] == "success"
    assert "XafsStream.e0_found" not in md  # no analysis stored


def test_normalisation_of_the_repeat_is_added_when_stored(tmp_path):
    run = make_run()
    stored = add_result(run, "repeat_0", CU.energy, CU.mu)
    (path,) = export_run(run, tmp_path)
    back = read_spectrum(path)
    np.testing.assert_allclose(back.columns["normtrans"], stored.arrays["norm"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(back.columns["flat"], stored.arrays["flat"], rtol=1e-9, atol=1e-12)
    e0 = stored.summary["e0"]
    assert abs(e0 - 8980.0) < 3.0  # Cu K edge; this foil's file is ~1.5 eV above the tabulated 8979 eV
    assert float(back.metadata["XafsStream.e0_found"].split()[0]) == pytest.approx(e0, abs=1e-3)
    # a result on a different grid is left out, with a note, rather than misaligned
    run2 = make_run()
    add_result(run2, "repeat_0", CU.energy + 5.0, CU.mu)
    (spec,) = xdi_spectra(run2)
    assert "normtrans" not in spec.columns and "energy grid differs" in spec.comments


def test_repeats_and_merge_selection(tmp_path):
    run = make_run(repeats=2)
    assert [s.name for s in xdi_spectra(run)] == ["repeat0", "repeat1"]
    (one,) = xdi_spectra(run, "1")
    np.testing.assert_allclose(one.columns["energy"], CU.energy + 0.1)
    with pytest.raises(InputError, match=r"no repeat 4; repeats: \[0, 1\]"):
        xdi_spectra(run, 4)
    with pytest.raises(InputError, match="no merged xafs.normalize result .*reprocess"):
        xdi_spectra(run, "merge")
    merged = add_result(run, "merge", CU.energy, CU.mu)
    paths = export_run(run, tmp_path)
    assert [p.name.rsplit("_", 1)[1] for p in paths] == ["repeat0.xdi", "repeat1.xdi", "merge.xdi"]
    back = read_spectrum(paths[-1])
    assert list(back.columns) == ["energy", "mutrans", "normtrans", "flat"]
    np.testing.assert_allclose(back.energy, merged.arrays["energy"], rtol=1e-9)
    np.testing.assert_allclose(back.mu, merged.arrays["mu"], rtol=1e-9)
    assert back.metadata["XafsStream.repeat"] == "merge"


def test_fluorescence_mu(tmp_path):
    run = make_run(mode="fluorescence")
    (spec,) = xdi_spectra(run)
    assert "mufluor" in spec.columns and "mutrans" not in spec.columns
    np.testing.assert_allclose(spec.columns["mufluor"], 0.02 * CU.mu, rtol=1e-12)
    (path,) = export_run(run, tmp_path)
    np.testing.assert_allclose(read_spectrum(path).mu, 0.02 * CU.mu, rtol=1e-8)


def test_bad_requests_raise_before_writing(tmp_path):
    run = make_run()
    with pytest.raises(InputError, match="format must be one of xdi, hdf5, csv"):
        export_run(run, tmp_path, fmt="xls")
    with pytest.raises(InputError, match="repeat must be"):
        parse_repeat("last")
    with pytest.raises(InputError, match="repeat must be"):
        parse_repeat(-1)
    with pytest.raises(InputError, match="Element.symbol"):
        export_run(make_run(element=None), tmp_path)
    target = tmp_path / "afile"
    target.write_text("keep")
    with pytest.raises(InputError, match="not a directory"):
        export_run(run, target)
    (path,) = export_run(run, tmp_path / "out")
    path.write_text("edited")
    with pytest.raises(InputError, match="not overwriting"):
        export_run(run, tmp_path / "out")
    assert path.read_text() == "edited"
    export_run(run, tmp_path / "out", overwrite=True)
    assert path.read_text().startswith("# XDI/1.0")
    map_run = make_run()
    map_run.start["xafs_kind"] = "map"
    with pytest.raises(InputError, match="XDI holds single spectra"):
        export_run(map_run, tmp_path, fmt="xdi")
