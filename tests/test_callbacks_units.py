"""Callbacks turn a real RunEngine's documents into work units: spectra per repeat + merge, map tiles."""

import numpy as np
import pytest

from xafs_stream.analyses import default_registry
from xafs_stream.callbacks.units import MapTileBuilder, SpectrumUnitBuilder
from xafs_stream.plans import mu_xafs_map, xafs_scan
from xafs_stream.worker.processing import process_unit
from xafs_stream.simulated_devices.phantom import default_map_energies


def test_spectrum_units_per_repeat_and_merge(RE, beamline):
    units = []
    RE.subscribe(SpectrumUnitBuilder(units.append))
    RE(xafs_scan([beamline.scaler], beamline.dcm, element="Cu", sample="Cu", repeats=2, dwell_s=0.5))
    assert [u.unit.index for u in units] == [0, 1, "merge"]
    first = units[0].unit
    assert first.metadata["complete"] and first.metadata["sample"] == "Cu"
    assert first.arrays["energy"].shape == first.arrays["mu"].shape == (first.metadata["n_points_expected"],)
    assert units[2].unit.arrays["mu_repeats"].shape == (2, first.metadata["n_points_expected"])
    ids = [u.unit_id for u in units]
    assert len(set(ids)) == 3 and all(i.startswith(first.run_uid) for i in ids)

    merge = units[2]
    merge.analyses = ["xafs.normalize"]
    records = {r.analysis: r for r in process_unit(merge, default_registry())}
    norm = records["xafs.normalize"]
    assert norm.status == "ok", norm.error
    assert abs(norm.result.summary["e0"] - 8979.0) < 1.0
    assert norm.result.summary["n_repeats_merged"] == 2
    # merging two repeats lowers the noise: the per-point noise is finite and small vs the edge step
    assert np.nanmedian(norm.result.arrays["mu_noise"]) < 1e-3 * norm.result.summary["edge_step"]


def test_repeat_unit_is_emitted_at_its_last_point_before_the_next_repeat(RE, beamline):
    order = []
    builder = SpectrumUnitBuilder(lambda env: order.append(("unit", env.unit.index)))
    RE.subscribe(builder)
    RE.subscribe(lambda name, doc: order.append(("event", doc["data"]["repeat"])) if name == "event" else None)
    RE(xafs_scan([beamline.scaler], beamline.dcm, [[-20, 20, 10, "E"]], element="Cu", repeats=2, dwell_s=0.1))
    # the builder is subscribed first, so it sees the 5th (last) event of repeat 0 before the logger does
    assert order[:6] == [("event", 0)] * 4 + [("unit", 0), ("event", 0)]
    assert order.index(("unit", 0)) < order.index(("event", 1))
    assert order[-1] == ("unit", "merge")


@pytest.mark.parametrize("order", ["tile-outer", "energy-outer"])
def test_tile_units_complete_in_both_orders(RE, beamline, order):
    units = []
    RE.subscribe(MapTileBuilder(units.append))
    energies = default_map_energies(12)
    RE(mu_xafs_map(beamline.mapdet, beamline.dcm, beamline.stage, list(energies), n_tile_rows=2, n_tile_cols=2,
                   element="Fe", order=order))
    assert sorted(u.unit.index for u in units) == [0, 1, 2, 3]
    if order == "energy-outer":  # all tiles complete with the last energy plane
        assert [u.unit.index for u in units] == [0, 1, 2, 3]
    truth = np.stack([beamline.phantom.absorption_at(e) for e in energies])
    for env in units:
        u = env.unit
        assert u.metadata["complete"] and env.affinity == f"map:{u.run_uid}"
        y0, x0 = u.metadata["y0"], u.metadata["x0"]
        stack = u.arrays["stack"]
        assert stack.shape == (12, 16, 16)
        ref = truth[:, y0:y0 + 16, x0:x0 + 16]
        centred = (stack - stack.mean(axis=(1, 2), keepdims=True)) - (ref - ref.mean(axis=(1, 2), keepdims=True))
        assert np.abs(centred).max() < 0.05


def test_other_runs_are_ignored(RE, beamline):
    units = []
    RE.subscribe(SpectrumUnitBuilder(units.append))
    RE.subscribe(MapTileBuilder(units.append))
    from bluesky.plans import count

    RE(count([beamline.scaler], 3))
    assert units == []


def test_a_users_sample_gets_spm_from_the_runs_feff_paths_or_a_skip_that_says_how(RE, beamline):
    """A real RunEngine scan of a sample the service has no path set for: with md={"feff_paths": ...} the
    merged spectrum gets an SpM result with those paths; without it a skipped result naming the sample and
    the config key."""
    for md, expect in (({"feff_paths": "packaged:cu_fcc_a3.615_feff6l"}, "ok"), ({}, "skipped")):
        units = []
        RE.subscribe(SpectrumUnitBuilder(units.append))
        RE(xafs_scan([beamline.scaler], beamline.dcm, element="Cu", sample="my foil 3", repeats=1, dwell_s=0.2,
                     md=md))
        merge = [u for u in units if u.unit.index == "merge"][-1]
        merge.analyses = ["xafs.normalize", "spm"]
        records = {r.analysis: r for r in process_unit(merge, default_registry())}
        spm = records["spm"]
        assert spm.status == expect, spm.error
        if expect == "ok":
            assert spm.result.params["path_set"] == "packaged:cu_fcc_a3.615_feff6l"
            assert abs(spm.result.summary["spm.shell1.R"] - 2.55) < 0.05
        else:
            assert "no path set for 'my foil 3'" in spm.error and "[analysis.spm] paths" in spm.error
