"""The service side: the ``imaging.features`` tile analysis and the per-map MapAccumulator."""

import numpy as np
import pytest
from xafs_stream.simulated_devices.phantom import make_phantom

from xafs_stream.analyses.imaging import MapAccumulator, settings_from_config, tile_features
from xafs_stream.analyses.registry import AnalysisResult, default_registry
from xafs_stream.engines.errors import InputError
from xafs_stream.core import WorkUnit

N, T = 64, 32
CONFIG = {"refs": "phantom"}


@pytest.fixture(scope="module")
def phantom_stack():
    ph = make_phantom((N, N), seed=4)
    rng = np.random.default_rng(5)
    return ph, ph.absorption_stack() + rng.normal(0, 0.05, (ph.energy.size, N, N))


def _unit(ph, stack, y, x):
    return WorkUnit("run1", "tile", f"{y}-{x}", {"energy": ph.energy, "stack": stack[:, y:y + T, x:x + T]},
                    {"y0": y, "x0": x, "map_ny": N, "map_nx": N, "tile_row": y // T, "tile_col": x // T})


def test_registered():
    reg = default_registry()
    assert "imaging.features" in reg
    assert reg["imaging.features"].unit_kind == "tile"


def test_tile_features_recover_the_phantom_fractions(phantom_stack):
    ph, stack = phantom_stack
    res = tile_features(_unit(ph, stack, 0, 32), {}, CONFIG)
    for i, p in enumerate(ph.phases):
        frac = res.arrays[f"feature.fraction.{p}"]
        assert res.dims[f"feature.fraction.{p}"] == ("y", "x")
        # noise 0.05 on μt propagates to ~0.05 rms in the fractions (see test_imaging_lcf)
        assert np.sqrt(np.mean((frac - ph.fractions[i, 0:T, 32:64]) ** 2)) < 0.1
    assert res.summary["imaging.tile.n_usable"] == T * T
    assert res.summary["imaging.tile.x0"] == 32


def test_bad_tiles_are_masked_or_clear_errors(phantom_stack):
    ph, stack = phantom_stack
    tile = stack[:, :T, :T].copy()
    tile[:, 3, 4] = np.nan
    tile[:, 5, :] = 0.0
    unit = WorkUnit("r", "tile", 0, {"energy": ph.energy, "stack": tile}, {})
    res = tile_features(unit, {}, CONFIG)
    assert res.summary["imaging.tile.n_masked_nan"] == 1
    assert res.summary["imaging.tile.n_masked_flat"] == T
    assert np.isnan(res.arrays["feature.lcf_total"][3, 4])
    zero = WorkUnit("r", "tile", 1, {"energy": ph.energy, "stack": np.zeros_like(tile)}, {})
    assert tile_features(zero, {}, CONFIG).summary["imaging.tile.n_usable"] == 0
    wrong = WorkUnit("r", "tile", 2, {"energy": ph.energy[:-1], "stack": tile}, {})
    with pytest.raises(InputError, match="stack has 100 energies"):
        tile_features(wrong, {}, CONFIG)
    outside = WorkUnit("r", "tile", 3, {"energy": ph.energy - 200, "stack": tile}, {})
    with pytest.raises(InputError, match="outside the reference grid"):
        tile_features(outside, {}, CONFIG)
    with pytest.raises(InputError, match="unknown keys"):
        settings_from_config({"reffs": "phantom"}, ph.energy)


def test_accumulator_tiles_any_order_pngs_state(phantom_stack):
    ph, stack = phantom_stack
    acc = MapAccumulator((N, N), ph.energy, CONFIG)
    order = [(32, 32), (0, 0), (32, 0), (0, 32)]
    for i, (y, x) in enumerate(order):
        tile = tile_features(_unit(ph, stack, y, x), {}, CONFIG) if i % 2 == 0 else stack[:, y:y + T, x:x + T]
        res = acc.add_tile(y, x, tile)
        assert isinstance(res, AnalysisResult)
        assert res.summary["imaging.n_tiles_done"] == i + 1
    assert res.summary["imaging.coverage"] == 1.0
    assert np.mean(res.arrays["labels"] == ph.labels) > 0.97
    assert res.arrays["quicklook_png"].tobytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.arrays["png.labels"].dtype == np.uint8 and res.dims["png.labels"] == ("byte",)
    for key in ("imaging.label_fraction.Magnetite", "imaging.corr_length.lcf_total", "imaging.domain.n",
                "imaging.xcorr.edge_position__lcf_total"):
        assert key in res.summary
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in res.summary.values())
    # the tile's result reuses the labels its statistics were computed with: equal to a fresh result
    fresh = acc.result()
    assert np.array_equal(res.arrays["labels"], fresh.arrays["labels"])
    assert np.array_equal(res.arrays["label_uncertainty"], fresh.arrays["label_uncertainty"], equal_nan=True)
    # a re-sent tile is idempotent; a worker taking over from the state continues identically
    again = acc.add_tile(0, 0, stack[:, :T, :T])
    assert again.summary["imaging.n_tiles_done"] == 4
    other = MapAccumulator.from_state(acc.to_state())
    a = acc.add_tile(32, 0, stack[:, 32:, :T])
    b = other.add_tile(32, 0, stack[:, 32:, :T])
    assert np.array_equal(a.arrays["labels"], b.arrays["labels"])
    # bad tiles: clear errors, and the map is unchanged
    before = acc.model.labels.copy()
    with pytest.raises(InputError, match="outside the map"):
        acc.add_tile(48, 48, stack[:, :T, :T])
    with pytest.raises(InputError, match="tile stack must have shape"):
        acc.add_tile(0, 0, stack[:-1, :T, :T])
    assert np.array_equal(acc.model.labels, before)


def test_accumulator_survives_nan_and_zero_tiles(phantom_stack):
    ph, stack = phantom_stack
    acc = MapAccumulator((N, N), ph.energy, CONFIG)
    bad = stack[:, :T, :T].copy()
    bad[:, :, :5] = np.nan
    acc.add_tile(0, 0, bad)
    res = acc.add_tile(0, 32, np.zeros((ph.energy.size, T, T)))
    assert np.isnan(res.arrays["smoothed.lcf_total"][:, 32:64][:T]).all()
    assert (res.arrays["labels"][:T, :5] == -1).all()
    res = acc.add_tile(32, 0, stack[:, 32:, :T])
    assert res.summary["imaging.n_tiles_done"] == 3
