"""HDF5 export of maps (stack reassembled from tiles, results placed into whole maps) and CSV events, from
in-memory runs with a known synthetic optical density (no Tiled)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from xafs_stream.client.catalog import RunData, StoredResult
from xafs_stream.engines.errors import InputError
from xafs_stream.client.export import export_run, map_stack, write_events_csv

ENERGIES = [7100.0, 7110.0, 7115.0, 7120.0, 7140.0]
TH, TW, ROWS, COLS = 4, 3, 2, 2


def make_map(rng_seed: int = 0, *, drop: tuple[int, int] | None = None):
    """A 2 x 2-tile map (8 x 6 px), energy-outer order, images = i0 · exp(-OD_true)."""
    rng = np.random.default_rng(rng_seed)
    n_e = len(ENERGIES)
    od_true = rng.uniform(0.2, 2.0, size=(n_e, TH * ROWS, TW * COLS))
    rows, images = [], []
    seq = 0
    for e in range(n_e):
        for tile in range(ROWS * COLS):
            if drop == (e, tile):
                continue
            r, c = divmod(tile, COLS)
            i0 = 1.0e6 * (1 + 0.01 * e + 0.001 * tile)
            seq += 1
            rows.append({"seq_num": seq, "time": 1.0e9 + seq, "tile_index": tile, "tile_row": r, "tile_col": c,
                         "energy_index": e, "mapdet_i0": i0, "dcm": ENERGIES[e]})
            images.append(i0 * np.exp(-od_true[e, r * TH:(r + 1) * TH, c * TW:(c + 1) * TW]))
    start = {"uid": "feedbeef-0000-4000-8000-000000000002", "time": 1.0e9, "scan_id": 3, "xafs_kind": "map",
             "plan_name": "mu_xafs_map", "sample": "phantom", "element": "Fe", "edge": "K", "energies": ENERGIES,
             "tile_ny": TH, "tile_nx": TW, "map_ny": TH * ROWS, "map_nx": TW * COLS, "n_tiles": ROWS * COLS,
             "n_tile_cols": COLS, "n_tile_rows": ROWS, "i0_key": "mapdet_i0", "image_key": "mapdet_image",
             "pixel_size_um": 0.5, "origin_um": [10.0, 20.0]}
    run = RunData(uid=start["uid"], start=start, stop={"exit_status": "success", "time": 1.0e9 + seq},
                  events=pd.DataFrame(rows), _images=np.stack(images))
    return run, od_true


def test_stack_is_reassembled_from_the_tiles():
    run, od_true = make_map()
    stack = map_stack(run)
    np.testing.assert_allclose(stack.optical_density, od_true, rtol=1e-12)
    assert stack.measured.all() and stack.measured.shape == (5, 4)
    np.testing.assert_allclose(stack.y, 20.0 + 0.5 * np.arange(8))
    np.testing.assert_allclose(stack.x, 10.0 + 0.5 * np.arange(6))
    np.testing.assert_allclose(stack.i0[2, 3], 1.0e6 * 1.023)


def test_missing_frames_stay_nan_and_unmeasured():
    run, od_true = make_map(drop=(4, 3))
    stack = map_stack(run)
    assert not stack.measured[4, 3] and stack.measured.sum() == 19
    assert np.isnan(stack.optical_density[4, 4:8, 3:6]).all()
    np.testing.assert_allclose(stack.optical_density[4, :4], od_true[4, :4], rtol=1e-12)


def test_hdf5_holds_stack_geometry_metadata_and_results(tmp_path):
    run, od_true = make_map()
    # per-tile results (tile i: e0 = 7110 + i everywhere, ok map), and a whole-map result
    tile_units = {}
    for i in range(4):
        arrays = {"energy": np.asarray(ENERGIES), "e0": np.full((TH, TW), 7110.0 + i),
                  "norm": np.full((5, TH, TW), float(i)), "ok": np.ones((TH, TW), bool)}
        tile_units[f"tile_{i}"] = StoredResult("xafs_normalize_tile", f"tile_{i}",
                                               {"status": "ok" if i != 2 else "error", "error": "" if i != 2 else "boom"},
                                               _arrays=arrays)
    labels = np.arange(48).reshape(8, 6) % 3
    run.results = {"xafs_normalize_tile": tile_units,
                   "imaging_map": {"map": StoredResult("imaging_map", "map", {
                       "analysis": "imaging.map", "version": "1", "status": "ok",
                       "summary": {"imaging": {"n_tiles_done": 4}}}, _arrays={"labels": labels})}}
    run.summary = {"imaging": {"n_tiles_done": 4}}
    (path,) = export_run(run, tmp_path)
    assert path.suffix == ".h5"
    with h5py.File(path, "r") as h5:
        data = h5["entry/data"]
        assert h5["entry"].attrs["NX_class"] == "NXentry" and data.attrs["NX_class"] == "NXdata"
        assert list(data.attrs["axes"]) == ["energy", "y", "x"]
        np.testing.assert_allclose(data["optical_density"][()], od_true, rtol=1e-12)
        np.testing.assert_allclose(data["energy"][()], ENERGIES)
        assert data["energy"].attrs["units"] == "eV"
        assert h5["entry/sample/name"][()].decode() == "phantom"
        assert json.loads(h5["entry/xafs_stream/start"][()])["n_tiles"] == 4
        e0 = h5["entry/results/xafs_normalize_tile/map/e0"][()]
        expected = np.block([[np.full((TH, TW), 7110.0), np.full((TH, TW), 7111.0)],
                             [np.full((TH, TW), np.nan), np.full((TH, TW), 7113.0)]])  # tile 2 failed
        np.testing.assert_array_equal(e0, expected)
        assert h5["entry/results/xafs_normalize_tile/map/norm"].shape == (5, 8, 6)
        status = json.loads(h5["entry/results/xafs_normalize_tile/map"].attrs["tile_status"])
        assert status == {"tile_0": "ok", "tile_1": "ok", "tile_2": "error", "tile_3": "ok"}
        np.testing.assert_array_equal(h5["entry/results/imaging_map/map/labels"][()], labels)
        assert json.loads(h5["entry/results/imaging_map/map"].attrs["summary"]) == {"imaging": {"n_tiles_done": 4}}


def test_bad_map_geometry_is_reported():
    run, _ = make_map()
    run._images = run._images[:, :3, :]
    with pytest.raises(InputError, match="does not fit the map geometry"):
        map_stack(run)
    run, _ = make_map()
    run._images = run._images[:-1]
    with pytest.raises(InputError, match="19 images for 20 events"):
        map_stack(run)
    run, _ = make_map()
    del run.start["tile_ny"]
    with pytest.raises(InputError, match="tile_ny"):
        map_stack(run)
    run, _ = make_map()
    with pytest.raises(InputError, match="--repeat applies to XDI"):
        export_run(run, ".", fmt="hdf5", repeat=0)


def test_csv_has_every_event_and_a_metadata_sidecar(tmp_path):
    run, _ = make_map()
    csv_path, side = write_events_csv(run, tmp_path / "ev.csv")
    table = pd.read_csv(csv_path)
    pd.testing.assert_frame_equal(table, run.events, check_dtype=False)
    info = json.loads(side.read_text())
    assert info["run_uid"] == run.uid and info["start"]["energies"] == ENERGIES
    assert "hdf5" in info["images"]


def test_spectrum_hdf5_has_one_nxdata_per_repeat(tmp_path):
    n = 50
    energy = np.linspace(8900.0, 9100.0, n)
    i0 = np.full(n, 1.0e6)
    it = i0 * np.exp(-np.where(energy > 8979.0, 1.5, 0.5))
    events = pd.DataFrame({"seq_num": np.arange(1, 2 * n + 1), "dcm": np.tile(energy, 2), "i0": np.tile(i0, 2),
                           "it": np.tile(it, 2), "repeat": np.repeat([0, 1], n)})
    start = {"uid": "5pec0000-0000-4000-8000-000000000005", "time": 1.0e9, "xafs_kind": "spectrum", "sample": "Cu",
             "element": "Cu", "edge": "K", "e0": 8979.0, "mode": "transmission", "energy_key": "dcm",
             "channels": {"i0": "i0", "it": "it"}}
    run = RunData(uid=start["uid"], start=start, stop={}, events=events)
    (path,) = export_run(run, tmp_path, fmt="hdf5")
    with h5py.File(path, "r") as h5:
        assert sorted(k for k in h5["entry"] if k.startswith("repeat_")) == ["repeat_0", "repeat_1"]
        group = h5["entry/repeat_1"]
        assert group.attrs["signal"] == "mutrans"
        np.testing.assert_allclose(group["energy"][()], energy)
        np.testing.assert_allclose(group["mutrans"][()], np.where(energy > 8979.0, 1.5, 0.5), rtol=1e-12)
        assert "results" not in h5["entry"]
