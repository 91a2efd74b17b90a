"""The worker analyses (xafs.normalize, xafs.normalize_tile) on hand-built work units, and `xafs-stream analyze`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import erf

from xafs_stream.analyses.preprocess import normalize_spectrum, normalize_tile
from xafs_stream.analyses.registry import default_registry
from xafs_stream.cli.main import main
from xafs_stream.data import SPECTRA_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.engines.xafs import pre_edge
from xafs_stream.io import read_spectrum
from xafs_stream.core import WorkUnit

CU = SPECTRA_DIR / "cu_metal_rt.xdi"


def spectrum_unit(energy, mu, **extra_arrays) -> WorkUnit:
    return WorkUnit(
        "run1",
        "spectrum",
        0,
        {"energy": energy, "mu": mu, **extra_arrays},
        {"sample": "Cu", "element": "Cu", "edge": "K", "e0": 8979.0},
    )


def test_analyses_are_registered():
    reg = default_registry()
    assert reg["xafs.normalize"].unit_kind == "spectrum"
    assert reg["xafs.normalize_tile"].unit_kind == "tile"


def test_normalize_spectrum_outputs():
    spec = read_spectrum(CU)
    res = normalize_spectrum(spectrum_unit(spec.energy, spec.mu), {}, {})
    for name in (
        "energy",
        "norm",
        "flat",
        "pre_edge_line",
        "post_edge_curve",
        "k",
        "chi",
        "r",
        "chir_mag",
        "chir_re",
        "chir_im",
    ):
        assert name in res.arrays and name in res.dims
    assert res.dims["chi"] == ("k",) and res.dims["chir_mag"] == ("r",) and res.dims["norm"] == ("energy",)
    s = res.summary
    ref = pre_edge(spec.energy, spec.mu)
    assert s["e0"] == ref.e0 and s["edge_step"] == pytest.approx(ref.edge_step)
    assert s["has_exafs"] and s["kmin"] == 3.0 and s["kmax"] == 16.0 and s["rbkg"] == 1.0
    assert 0 < s["noise_chi"] < 0.01 and s["energy_shift"] == 0.0
    assert all(isinstance(v, (int, float, str, bool)) for v in s.values())
    json.dumps(res.params)  # JSON-able
    json.dumps(res.diagnostics)


def test_config_is_applied_and_glitches_are_listed():
    spec = read_spectrum(CU)
    mu = spec.mu.copy()
    mu[300] += 0.05  # a single-point glitch ~500 eV above the edge
    config = {"kmin": 2.0, "kmax": 12.0, "rbkg": 1.2, "kweight": 3, "deglitch": True}
    res = normalize_spectrum(spectrum_unit(spec.energy, mu), {}, config)
    s = res.summary
    assert (s["kmin"], s["kmax"], s["rbkg"], s["kweight"]) == (2.0, 12.0, 1.2, 3.0)
    assert res.params["autobk"]["rbkg"] == 1.2 and res.params["xftf"]["kweight"] == 3.0
    assert s["n_glitches"] >= 1 and spec.energy[300] in res.diagnostics["glitch_energies"]
    assert res.arrays["glitch"][300] and res.arrays["mu"][300] == mu[300]  # recorded; the data are kept
    clean = normalize_spectrum(
        spectrum_unit(spec.energy, spec.mu), {}, {k: v for k, v in config.items() if k != "deglitch"}
    )
    assert np.max(np.abs(res.arrays["norm"] - clean.arrays["norm"])) < 0.005  # the glitch was removed


def test_reference_channel_calibrates_energy():
    spec = read_spectrum(CU)
    offset = 2.5  # the monochromator reads 2.5 eV high
    it = np.exp(-spec.mu)  # foil absorption ln(it / iref) = mu of the Cu foil itself
    iref = it * np.exp(-spec.mu)
    unit = spectrum_unit(spec.energy + offset, spec.mu, it=it, iref=iref)
    res = normalize_spectrum(unit, {}, {})
    measured = pre_edge(spec.energy, spec.mu).e0
    assert res.summary["energy_shift"] == pytest.approx(8979.0 - measured - offset)
    assert res.summary["e0"] == pytest.approx(8979.0)  # the sample is the foil here
    off = normalize_spectrum(unit, {}, {"calibrate": False})
    assert off.summary["energy_shift"] == 0.0 and off.summary["e0"] == pytest.approx(measured + offset)


def test_xanes_only_scan_gives_normalisation_without_chi():
    spec = read_spectrum(CU)
    keep = spec.energy < 9010
    res = normalize_spectrum(spectrum_unit(spec.energy[keep], spec.mu[keep]), {}, {})
    assert not res.summary["has_exafs"] and "k" not in res.arrays and "norm" in res.arrays
    assert "exafs" in res.diagnostics


def test_bad_spectrum_and_config_raise_input_error():
    spec = read_spectrum(CU)
    with pytest.raises(InputError, match="unknown processing setting"):
        normalize_spectrum(spectrum_unit(spec.energy, spec.mu), {}, {"rbgk": 1.0})
    with pytest.raises(InputError, match="no edge"):
        normalize_spectrum(spectrum_unit(spec.energy, np.ones_like(spec.mu)), {}, {})
    with pytest.raises(InputError, match="no 'mu' array"):
        normalize_spectrum(WorkUnit("r", "spectrum", 0, {"energy": spec.energy}), {}, {})


def test_tile_with_zero_and_nan_pixels():
    energy = np.linspace(7080.0, 7200.0, 100)
    ny, nx = 6, 5
    rng = np.random.default_rng(0)
    e0 = 7112.0 + rng.normal(0, 1.0, (ny, nx))
    thick = rng.uniform(0.3, 2.0, (ny, nx))
    x = energy[:, None, None] - e0[None]
    stack = 0.1 + thick[None] * 0.5 * (1 + erf(x / 1.5)) + rng.normal(0, 0.003, (energy.size, ny, nx))
    stack[:, 0, 0] = 0.0
    stack[:, 2, 3] = np.nan
    stack[10, 4, 1] = np.inf
    unit = WorkUnit("run1", "tile", 3, {"energy": energy, "stack": stack}, {"tile_row": 0, "tile_col": 3})
    res = normalize_tile(unit, {}, {})
    ok = res.arrays["ok"]
    assert ok.shape == (ny, nx) and res.arrays["norm"].shape == (energy.size, ny, nx)
    assert not ok[0, 0] and not ok[2, 3] and not ok[4, 1] and ok.sum() == ny * nx - 3
    assert res.summary["n_bad_pixels"] == 3 and res.summary["n_pixels"] == ny * nx
    assert np.allclose(res.arrays["edge_step"][ok], thick[ok], rtol=0.03)
    assert np.allclose(res.arrays["e0"][ok], e0[ok], atol=1.3)
    assert np.isnan(res.arrays["e0"][~ok]).all()
    assert res.dims["norm"] == ("energy", "y", "x")
    assert sum(res.diagnostics["bad_pixel_reasons"].values()) == 3


def test_cli_analyze_table_json_and_plot(tmp_path, capsys):
    png = tmp_path / "out.png"
    assert main(["analyze", str(CU), str(SPECTRA_DIR / "fe_metal_rt.xdi"), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "cu_metal_rt.xdi" in out and "8980.50" in out and "3-16" in out and "7111.00" in out
    assert png.stat().st_size > 10_000
    assert main(["analyze", str(CU), "--json", "--kmax", "12"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["e0"] == 8980.5 and rows[0]["kmax"] == 12.0 and rows[0]["kmin"] == 3.0


def test_cli_analyze_xanes_only_scan(tmp_path, capsys):
    spec = read_spectrum(CU)
    keep = spec.energy < 9050  # ends 70 eV above E0: k < 3 / Å
    short = tmp_path / "cu_xanes.dat"
    short.write_text("\n".join(f"{e} {m}" for e, m in zip(spec.energy[keep], spec.mu[keep])) + "\n")
    png = tmp_path / "xanes.png"
    assert main(["analyze", str(short), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "XANES only" in out and "8980.50" in out and png.exists()
    # a bare two-column file names no columns: the energy column is a guess, and the verdict says so
    assert "quality: warn (energy column guessed: the first column (the file names no columns))" in out
    assert main(["analyze", str(short), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["has_exafs"] is False and "noise_chi" not in row and row["e0"] == 8980.5
    assert row["quality"] == "warn"


def test_cli_analyze_reports_bad_files_and_continues(tmp_path, capsys):
    flat = tmp_path / "flat.dat"
    flat.write_text("\n".join(f"{7000 + i} 1.0" for i in range(50)) + "\n")
    rc = main(["analyze", str(tmp_path / "missing.xdi"), str(flat), str(CU)])
    captured = capsys.readouterr()
    assert rc == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("xafs-stream analyze: error:")]
    assert len(errors) == 2 and "cannot read" in errors[0] and "no edge" in errors[1]
    assert "Traceback" not in captured.err
    assert "cu_metal_rt.xdi" in captured.out
