"""Plans: regions, metadata, time estimate, map ordering, and bad arguments rejected before any motion."""

import numpy as np
import pytest

from xafs_stream.plans import PlanArgumentError, estimate_scan_time, mu_xafs_map, parse_regions, xafs_scan
from xafs_stream.plans.regions import ETOK, point_dwells, region_energies
from xafs_stream.simulated_devices.phantom import default_map_energies


def test_default_regions_reach_k14_with_dense_xanes():
    regions = parse_regions(None)
    energies, owners = region_energies(regions, 8979.0)
    assert np.all(np.diff(energies) > 0)
    assert energies[0] == pytest.approx(8979.0 - 200)
    k_last = np.sqrt((energies[-1] - 8979.0) * ETOK)
    assert k_last == pytest.approx(14.0, abs=0.01)
    xanes = energies[owners == 1]
    assert np.allclose(np.diff(xanes), 0.5)


def test_k_weighted_dwell_grows_with_k_and_time_estimate_adds_up():
    regions = parse_regions([[-50, -10, 10, "E"], [3, 12, 1, "k"]])
    dwells = point_dwells(regions, 7112.0, 1.0, kweight_dwell=2.0)
    assert dwells[:5] == pytest.approx([1.0] * 5)
    assert dwells[-1] == pytest.approx((12 / 3) ** 2)
    est = estimate_scan_time([[-50, -10, 10, "E"], [3, 12, 1, "k"]], e0=7112.0, dwell_s=1.0, kweight_dwell=2.0,
                             repeats=3, overhead_per_point_s=0.2)
    assert est == pytest.approx(3 * (dwells.sum() + 0.2 * len(dwells)))


def test_xafs_scan_records_queryable_metadata(RE, beamline, collect):
    RE(xafs_scan([beamline.scaler], beamline.dcm, [[-50, 50, 5, "E"]], element="Cu", sample="Cu", repeats=2,
                 dwell_s=0.2, md={"operator": "test", "sample": "Cu foil"}))
    start = collect[0][1]
    assert start["plan_name"] == "xafs_scan"
    assert start["element"] == "Cu" and start["edge"] == "K" and start["e0"] == pytest.approx(8979.0)
    assert start["sample"] == "Cu foil"  # the caller's metadata wins
    assert start["operator"] == "test"
    assert start["channels"]["i0"] == "scaler_i0"
    events = [d for n, d in collect if n == "event"]
    assert len(events) == 2 * start["n_points"] == 2 * 21
    assert [e["data"]["repeat"] for e in events] == [0] * 21 + [1] * 21
    assert events[0]["data"]["dcm"] == pytest.approx(8979.0 - 50)
    assert collect[-1][1]["exit_status"] == "success"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"regions": [[-50, 50, -5, "E"]]}, "step must be > 0"),
        ({"regions": []}, "non-empty"),
        ({"regions": [[50, -50, 5, "E"]]}, "greater than start"),
        ({"regions": [[-50, 50, 5, "q"]]}, "space must be"),
        ({"element": "Xx"}, "unknown element"),
        ({"regions": [[-50, 50, 5, "E"]], "e0": 40000.0}, "outside the range"),
        ({"repeats": 0}, "repeats"),
        ({"dwell_s": -1}, "dwell_s"),
    ],
)
def test_bad_xafs_scan_arguments_fail_before_any_motion(RE, beamline, collect, kwargs, message):
    args = {"regions": [[-50, 50, 5, "E"]], "element": "Cu"} | kwargs
    regions = args.pop("regions")
    with pytest.raises(PlanArgumentError, match=message):
        RE(xafs_scan([beamline.scaler], beamline.dcm, regions, **args))
    assert beamline.dcm.moves == 0
    assert not any(name == "start" for name, _ in collect)


@pytest.mark.parametrize("order", ["tile-outer", "energy-outer"])
def test_map_plan_visits_every_tile_at_every_energy(RE, beamline, collect, order):
    energies = list(default_map_energies(12))
    RE(mu_xafs_map(beamline.mapdet, beamline.dcm, beamline.stage, energies, n_tile_rows=2, n_tile_cols=3,
                   element="Fe", order=order))
    start = collect[0][1]
    assert start["map_ny"] == 2 * 16 and start["map_nx"] == 3 * 16 and start["n_tiles"] == 6
    events = [d["data"] for n, d in collect if n == "event"]
    assert len(events) == 6 * 12
    pairs = {(e["tile_index"], e["energy_index"]) for e in events}
    assert pairs == {(t, i) for t in range(6) for i in range(12)}
    first = [(e["tile_index"], e["energy_index"]) for e in events[:3]]
    expected = [(0, 0), (0, 1), (0, 2)] if order == "tile-outer" else [(0, 0), (1, 0), (2, 0)]
    assert first == expected
    assert events[0]["mapdet_image"].shape == (16, 16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"energies": [7200.0, 7100.0]}, "strictly increasing"),
        ({"energies": [100.0, 200.0]}, "outside the range"),
        ({"order": "random"}, "order must be"),
        ({"n_tile_rows": 0}, "n_tile_rows"),
        ({"element": "Qq"}, "unknown element"),
    ],
)
def test_bad_map_arguments_fail_before_any_motion(RE, beamline, collect, kwargs, message):
    args = {"energies": [7100.0, 7150.0], "n_tile_rows": 1, "n_tile_cols": 1, "element": "Fe"} | kwargs
    energies = args.pop("energies")
    with pytest.raises(PlanArgumentError, match=message):
        RE(mu_xafs_map(beamline.mapdet, beamline.dcm, beamline.stage, energies, **args))
    assert beamline.dcm.moves == 0
    assert not collect
