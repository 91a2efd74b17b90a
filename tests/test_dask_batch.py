"""Batch work on a real Dask LocalCluster (2 worker processes): a stack read tile by tile from HDF5 or zarr and
mapped on the cluster equals the in-memory batch map; many runs reprocessed on the cluster store the results
that plain ``reprocess`` stores."""

import json
import logging

import h5py
import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the dask extra (dask[distributed]) is not installed")

from xafs_stream.simulated_devices.phantom import make_phantom  # noqa: E402

from xafs_stream.batch.cluster import dask_client  # noqa: E402
from xafs_stream.batch.stack import map_stack_on_cluster  # noqa: E402
from xafs_stream.cli.main import main  # noqa: E402
from xafs_stream.engines.imaging import ImagingSettings, analyze_stack  # noqa: E402
from xafs_stream.io.stack import read_stack  # noqa: E402
from xafs_stream.io.stack_tiles import open_stack_tiles  # noqa: E402

# float rounding of vectorised kernels (BLAS) depends on the block's size: tiles agree to ~1e-14
RTOL = 1e-9


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    """The phantom (96 x 80 px, 100 energies, noise 0.3) as an absorption HDF5 stack, an intensity HDF5 stack
    with its I0, and a zarr group."""
    import zarr

    ph = make_phantom((96, 80), seed=2)
    stack = (ph.absorption_stack() + np.random.default_rng(0).normal(0, 0.3, (ph.energy.size, 96, 80))
             ).astype(np.float32)
    d = tmp_path_factory.mktemp("stacks")
    with h5py.File(d / "od.h5", "w") as h5:
        h5["stack"] = stack
        h5["energy"] = ph.energy
        for name, ref in zip(ph.phases, ph.refs):
            h5[f"refs/{name}"] = ref
    i0 = np.linspace(1e5, 2e5, ph.energy.size)
    with h5py.File(d / "counts.h5", "w") as h5:
        h5["data"] = (i0[:, None, None] * np.exp(-stack.astype(float)))
        h5["energy"] = ph.energy
        h5["i0"] = i0
    # the same counts without their I0, which comes as a spectrum file (``--i0``)
    with h5py.File(d / "counts_no_i0.h5", "w") as h5:
        h5["data"] = (i0[:, None, None] * np.exp(-stack.astype(float)))
        h5["data"].attrs["stack_kind"] = "intensity"
        h5["energy"] = ph.energy
    np.savetxt(d / "i0.txt", np.column_stack([ph.energy, i0]), header="energy i0")
    group = zarr.open_group(str(d / "od.zarr"), mode="w")
    group.create_array("stack", data=stack, chunks=(100, 32, 32))
    group.create_array("energy", data=ph.energy)
    return ph, d


@pytest.fixture(scope="module")
def cluster():
    with dask_client("local", n_workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        yield client


@pytest.mark.parametrize("name, i0", [("od.h5", None), ("counts.h5", None), ("counts_no_i0.h5", "i0.txt"),
                                      ("od.zarr", None)])
def test_every_tile_reads_as_that_part_of_the_whole_stack(phantom_files, name, i0):
    _, d = phantom_files
    i0 = None if i0 is None else d / i0
    tiles = open_stack_tiles(d / name, i0=i0)
    whole = read_stack(d / "od.h5").stack if name == "od.zarr" else read_stack(d / name, i0=i0).stack
    assert tiles.shape == whole.shape
    boxes = tiles.tiles(33)
    assert len(boxes) == 3 * 3 and sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes) == 96 * 80
    for y0, y1, x0, x1 in boxes:
        np.testing.assert_allclose(tiles.read(y0, y1, x0, x1), whole[:, y0:y1, x0:x1], rtol=1e-12)


def test_a_stack_mapped_on_the_cluster_equals_the_in_memory_map(phantom_files, cluster):
    ph, d = phantom_files
    settings = ImagingSettings(refs=ph.refs, ref_names=ph.phases)
    st = read_stack(d / "od.h5")
    batch = analyze_stack(st.energy, st.stack, settings)
    seen = []
    dist = map_stack_on_cluster(cluster, open_stack_tiles(d / "od.h5"), settings, tile=32,
                                progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (9, 9)  # 3 x 3 tiles of 32 px
    assert dist.raw.keys() == batch.raw.keys()
    for name in batch.raw:
        np.testing.assert_allclose(dist.raw[name], batch.raw[name], rtol=RTOL, atol=1e-12, err_msg=name)
    assert dist.reasons == batch.reasons
    np.testing.assert_array_equal(dist.labels, batch.labels)
    assert dist.phase_names == batch.phase_names
    for key, value in batch.statistics.items():
        assert dist.statistics[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
    # and the map is right: the phantom's labels (>= 95 % after the MRF at this noise, as the batch test asks)
    truth = np.asarray(ph.labels)
    assert np.mean(dist.labels == truth) >= 0.95


def test_map_command_with_a_local_cluster_prints_the_same_statistics(phantom_files, tmp_path, capsys, caplog):
    _, d = phantom_files
    # at this noise (0.3 per energy, per pixel) most pixels show no significant edge on their own: the
    # verdict says so (bad, exit code 3) on both paths, although the MRF labels are right (test above)
    assert main(["map", str(d / "od.h5"), "--json", str(tmp_path / "mem.json")]) == 3
    assert main(["map", str(d / "od.h5"), "--scheduler", "local", "--workers", "2", "--tile", "40",
                 "--memory-limit", "1GB", "--json", str(tmp_path / "dask.json")]) == 3
    mem = json.loads((tmp_path / "mem.json").read_text())
    dist = json.loads((tmp_path / "dask.json").read_text())
    assert dist["phases"] == mem["phases"] and dist["masked"] == mem["masked"]
    assert dist["quality"] == mem["quality"] and mem["quality"]["verdict"] == "bad"
    for key, value in mem["statistics"].items():
        if value is None:  # NaN (e.g. no correlation length) is written as null
            assert dist["statistics"][key] is None, key
        else:
            assert dist["statistics"][key] == pytest.approx(value, rel=1e-6), key
    # Dask's own INFO chatter (scheduler, nannies) stays out of the user's terminal
    assert not [r for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING]
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--scheduler", "local", "--tile", "0"], "tile size must be >= 1 px"),
    (["--scheduler", "nowhere"], "--scheduler must be 'local' or a scheduler address"),
    (["--tile", "64"], "--tile and --memory-limit apply to a Dask run"),
])
def test_map_command_refuses_bad_dask_options_in_one_line(phantom_files, capsys, argv, message):
    _, d = phantom_files
    assert main(["map", str(d / "od.h5"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_npz_stack_is_refused_for_tile_reading_in_one_line(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", stack=np.ones((5, 4, 4)), energy=np.arange(5.0))
    assert main(["map", str(tmp_path / "s.npz"), "--scheduler", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tile-by-tile reading needs an HDF5 or zarr stack" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, words", [
    (["--memory-limit", "1GB"], "--memory-limit applies to a Dask run"),
    (["--via-broker", "--scheduler", "local"], "--via-broker and --scheduler exclude each other"),
])
def test_reprocess_options_that_do_not_go_together_are_one_line(argv, words, capsys):
    """Refused before Tiled is asked (the address below answers nothing), in one line, exit code 2."""
    assert main(["reprocess", "0123abcd", *argv, "--tiled-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def _stored(tiled, uid: str, analysis: str) -> dict:
    from xafs_stream.storage.layout import RESULTS_ROOT

    node = tiled.client[RESULTS_ROOT][uid][analysis]
    return {key: node[key].metadata["summary"] for key in node}


def test_many_runs_reprocessed_on_the_cluster_store_what_plain_reprocess_stores(tiled, RE, beamline, raw_only,
                                                                               collect, capsys):
    from xafs_stream.plans import mu_xafs_map, xafs_scan
    from xafs_stream.simulated_devices.phantom import default_map_energies

    for sample in ("Cu", "Cu"):
        RE(xafs_scan([beamline.scaler], beamline.dcm, [[-100, 100, 2, "E"], [4.2, 10, 0.1, "k"]], element="Cu",
                     sample=sample, repeats=2, dwell_s=0.2))
    RE(mu_xafs_map(beamline.mapdet, beamline.dcm, beamline.stage, list(default_map_energies(24)), n_tile_rows=1,
                   n_tile_cols=2, element="Fe", order="energy-outer"))
    raw_only.flush()
    uids = [doc["uid"] for name, doc in collect if name == "start"]
    assert len(uids) == 3
    creds = ["--tiled-uri", tiled.uri.split("?")[0], "--api-key", tiled.api_key]

    assert main(["reprocess", uids[0][:8], uids[1], "--analysis", "xafs.normalize", "--scheduler", "local",
                 "--workers", "2", *creds]) == 0
    assert main(["reprocess", uids[2], "--scheduler", "local", *creds]) == 0
    out = capsys.readouterr().out
    assert f"run {uids[0]}: 3 units, 0 complete, 3 processed (3 results written)" in out, out
    assert f"run {uids[1]}: 3 units, 0 complete, 3 processed (3 results written)" in out, out
    assert f"run {uids[2]}: 2 units, 0 complete, 2 processed" in out, out
    on_cluster = {uid: _stored(tiled, uid, "xafs_normalize") for uid in uids[:2]}
    map_cluster = _stored(tiled, uids[2], "imaging_map")
    tiles_cluster = _stored(tiled, uids[2], "imaging_features")
    assert set(on_cluster[uids[0]]) == {"merge", "repeat_0", "repeat_1"}
    assert abs(on_cluster[uids[0]]["merge"]["e0"] - 8979.0) < 1.0  # Cu K edge
    assert set(map_cluster) == {"map"} and set(tiles_cluster) == {"tile_0", "tile_1"}
    assert map_cluster["map"]["imaging"]["n_tiles_done"] == 2  # the client's map owner assembled both tiles

    # the same runs redone here (no cluster): the same numbers on the same nodes
    assert main(["reprocess", *uids[:2], "--analysis", "xafs.normalize", "--force", *creds]) == 0
    assert main(["reprocess", uids[2], "--force", *creds]) == 0
    for uid in uids[:2]:
        here = _stored(tiled, uid, "xafs_normalize")
        assert here.keys() == on_cluster[uid].keys()
        for unit in here:
            assert here[unit]["e0"] == on_cluster[uid][unit]["e0"]
            assert here[unit]["edge_step"] == on_cluster[uid][unit]["edge_step"]
    # the tiles' features; the whole map is assembled from them by the same map owner in the client either way
    # (a redo continues the stored map, so its update history differs from a first pass)
    _assert_same(tiles_cluster, _stored(tiled, uids[2], "imaging_features"))
    capsys.readouterr()


def _assert_same(a, b, path="summary"):
    """Nested summaries equal: the same keys and strings, numbers to 1e-9 (float rounding of tiled kernels)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), path
        for key in b:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, nan_ok=True), path
    else:
        assert a == b, path
