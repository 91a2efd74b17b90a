"""`xafs-stream reprocess` fills a run whose live processing was off, from the raw data in Tiled."""


from xafs_stream.cli.main import main
from xafs_stream.plans import mu_xafs_map, xafs_scan
from xafs_stream.worker.reprocess import derive_units
from xafs_stream.simulated_devices.phantom import default_map_energies
from xafs_stream.storage.layout import RESULTS_ROOT


def cli_args(tiled):
    return ["--tiled-uri", tiled.uri.split("?")[0], "--api-key", tiled.api_key]


def test_reprocess_fills_a_spectrum_run(tiled, RE, beamline, raw_only, collect, capsys):
    RE(xafs_scan([beamline.scaler], beamline.dcm, [[-100, 100, 2, "E"], [4.2, 10, 0.1, "k"]], element="Cu",
                 sample="Cu", repeats=2, dwell_s=0.2))
    raw_only.flush()
    uid = collect[0][1]["uid"]
    assert RESULTS_ROOT not in tiled.client or uid not in tiled.client[RESULTS_ROOT]  # nothing processed live
    units = derive_units(tiled.client, uid)
    assert [u.unit.index for u in units] == [0, 1, "merge"]

    rc = main(["reprocess", uid[:8], "--analysis", "xafs.normalize", *cli_args(tiled)])
    out = capsys.readouterr().out
    assert rc == 0 and "3 processed" in out, out
    run = tiled.client[RESULTS_ROOT][uid]
    assert sorted(run["xafs_normalize"]) == ["merge", "repeat_0", "repeat_1"]
    assert abs(run["xafs_normalize"]["merge"].metadata["summary"]["e0"] - 8979.0) < 1.0
    # nothing missing any more: a second pass does nothing; --force redoes all, still one node per unit
    main(["reprocess", uid, "--analysis", "xafs.normalize", *cli_args(tiled)])
    assert "0 processed" in capsys.readouterr().out
    main(["reprocess", uid, "--analysis", "xafs.normalize", "--force", *cli_args(tiled)])
    assert "3 processed" in capsys.readouterr().out
    assert sorted(run["xafs_normalize"]) == ["merge", "repeat_0", "repeat_1"]


def test_reprocess_rebuilds_map_tiles_identically(tiled, RE, beamline, raw_only, collect):
    from xafs_stream.callbacks.units import MapTileBuilder

    live = []
    RE.subscribe(MapTileBuilder(live.append))
    RE(mu_xafs_map(beamline.mapdet, beamline.dcm, beamline.stage, list(default_map_energies(12)), n_tile_rows=1,
                   n_tile_cols=2, element="Fe", order="energy-outer"))
    raw_only.flush()
    uid = collect[0][1]["uid"]
    replayed = derive_units(tiled.client, uid)
    assert [u.unit_id for u in replayed] == [u.unit_id for u in live]
    for a, b in zip(live, replayed):
        assert (a.unit.arrays["stack"] == b.unit.arrays["stack"]).all()


def test_reprocess_unknown_run_is_a_clear_error(tiled, capsys):
    rc = main(["reprocess", "no-such-run", *cli_args(tiled)])
    assert rc == 2
    assert "no unique run matches 'no-such-run'" in capsys.readouterr().err
