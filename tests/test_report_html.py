"""HTML reports from in-memory runs (no Tiled): numbers with uncertainties, figures, escaping, failures."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from xafs_stream.analyses.preprocess import normalize_spectrum
from xafs_stream.client.catalog import RunData, StoredResult
from xafs_stream.data import SPECTRA_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.io import read_spectrum
from xafs_stream.client.report import format_pm, write_report
from xafs_stream.storage.layout import nest_summary
from xafs_stream.core import WorkUnit

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "value, err, text",
    [
        (2.54311, 0.00442, "2.5431 ± 0.0044"),  # 2 significant digits of the error, value to match
        (0.008627, 0.000632, "0.00863 ± 0.00063"),
        (11.2298, 0.6752, "11.23 ± 0.68"),
        (12.0, 3.0, "12.0 ± 3.0"),
        (7123.456, 1234.0, "7123 ± 1234"),
        (8979.0, 0.0, "8979 ± 0"),
        (11.2298, None, "11.23"),
        (1211.3695, None, "1211.4"),
        (0.0002664, None, "0.0002664"),
        (math.nan, 0.1, "n/a"),
        (None, None, ""),
        ("Cu-Cu", None, "Cu-Cu"),
    ],
)
def test_format_pm(value, err, text):
    assert format_pm(value, err) == text


def make_spectrum_run(sample: str = "Cu foil") -> RunData:
    cu = read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")
    n = cu.energy.size
    events = pd.DataFrame({"seq_num": np.arange(1, n + 1), "dcm": cu.energy, "scaler_i0": cu.columns["i0"],
                           "scaler_it": cu.columns["itrans"], "repeat": 0})
    start = {"uid": "0badc0de-0000-4000-8000-000000000003", "time": 1.79e9, "scan_id": 11, "xafs_kind": "spectrum",
             "plan_name": "xafs_scan", "sample": sample, "element": "Cu", "edge": "K", "e0": 8979.0,
             "mode": "transmission", "energy_key": "dcm", "channels": {"i0": "scaler_i0", "it": "scaler_it"}}
    run = RunData(uid=start["uid"], start=start, stop={"exit_status": "success", "time": 1.79e9 + 600}, events=events)
    res = normalize_spectrum(WorkUnit(run.uid, "spectrum", 0, {"energy": cu.energy, "mu": cu.mu}, {"e0": 8979.0}),
                             {}, {})
    for unit in ("repeat_0", "merge"):
        run.results.setdefault("xafs_normalize", {})[unit] = StoredResult(
            "xafs_normalize", unit, {"analysis": "xafs.normalize", "version": "1.0", "status": "ok",
                                     "summary": nest_summary(res.summary), "params": res.params,
                                     "timings": {"compute_s": 0.05}}, _arrays=res.arrays)
    run.results["spm"] = {"merge": StoredResult("spm", "merge", {
        "analysis": "spm", "version": "1", "status": "error", "error": "InputError: k range too short for SpM"})}
    # a Bayesian result with known numbers (written by hand)
    bayes = {"bayes.K": 2, "bayes.F.K1": 40.0, "bayes.F.K2": 31.5, "bayes.F_se.K1": 0.41, "bayes.F_se.K2": 0.3,
             "bayes.peak1.center": 8983.21, "bayes.peak1.center_err": 0.33, "bayes.peak1.height": 0.52,
             "bayes.peak1.height_err": 0.04, "bayes.rhat_max": 1.03, "bayes.converged": True}
    x = np.linspace(8959.0, 9009.0, 60)
    fit = 1 / (1 + np.exp(-(x - 8980.0)))
    arrays = {"bayes_k": np.array([1.0, 2.0]), "bayes_F": np.array([40.0, 31.5]), "bayes_F_se": np.array([0.41, 0.3]),
              "bayes_energy": x, "bayes_data": fit + 0.01, "bayes_best_fit": fit, "bayes_band_lo95": fit - 0.02,
              "bayes_band_hi95": fit + 0.02, "bayes_pred_lo95": fit - 0.05, "bayes_pred_hi95": fit + 0.05}
    run.results["bayes_xanes"] = {"merge": StoredResult("bayes_xanes", "merge", {
        "analysis": "bayes.xanes", "version": "1.0", "status": "ok", "summary": nest_summary(bayes),
        "params": {"config": {"n_sweeps": 400}}}, _arrays=arrays)}
    run.summary = nest_summary(res.summary)
    return run


def test_spectrum_report_shows_results_parameters_and_failures(tmp_path):
    run = make_spectrum_run()
    page = write_report(run, tmp_path)
    text = page.read_text(encoding="utf-8")
    e0 = run.results["xafs_normalize"]["merge"].summary["e0"]
    assert f"<td class=\"num\">{format_pm(e0)}</td>" in text
    assert "InputError: k range too short for SpM" in text  # the failed analysis and why
    assert "2 (chosen)" in text and "31.50 ± 0.30" in text and "8983.21 ± 0.33" in text
    assert "n_sweeps" in text and "rbkg" in text  # processing parameters
    assert "http://" not in text and "https://" not in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs == [f"Cu_foil_11_0badc0de_{name}.png" for name in ("mu", "exafs", "bayes")]
    for src in srcs:
        assert (tmp_path / src).read_bytes()[:8] == PNG


def test_report_escapes_text_and_refuses_to_overwrite(tmp_path):
    run = make_spectrum_run(sample="Cu <script>alert(1)</script>")
    page = write_report(run, tmp_path, inline=True)
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert text.count("data:image/png;base64,") == 3 and list(tmp_path.glob("*.png")) == []
    with pytest.raises(InputError, match="not overwriting"):
        write_report(run, tmp_path, inline=True)
    assert write_report(run, tmp_path, inline=True, overwrite=True) == page


def test_map_report_shows_the_stack_and_the_map_results(tmp_path):
    energies = [7100.0, 7120.0, 7140.0]
    od = np.stack([np.full((4, 6), 0.5), np.full((4, 6), 1.0), np.full((4, 6), 1.5)])
    od[:, :, 3:] *= 2.0
    rows, images = [], []
    for e in range(3):
        for tile in range(2):
            rows.append({"seq_num": len(rows) + 1, "tile_index": tile, "energy_index": e, "i0": 1.0e5})
            images.append(1.0e5 * np.exp(-od[e, :, 3 * tile:3 * tile + 3]))
    start = {"uid": "c0ffee00-0000-4000-8000-000000000004", "time": 1.79e9, "xafs_kind": "map", "sample": "phantom",
             "element": "Fe", "edge": "K", "energies": energies, "tile_ny": 4, "tile_nx": 3, "map_ny": 4, "map_nx": 6,
             "n_tiles": 2, "n_tile_cols": 2, "i0_key": "i0", "image_key": "img", "order": "energy-outer"}
    labels = np.zeros((4, 6), int)
    labels[:, 3:] = 1
    run = RunData(uid=start["uid"], start=start, stop={"exit_status": "success", "time": 1.79e9 + 60},
                  events=pd.DataFrame(rows), _images=np.stack(images))
    run.results["imaging_map"] = {"map": StoredResult("imaging_map", "map", {
        "analysis": "imaging.map", "version": "1", "status": "ok",
        "summary": nest_summary({"imaging.n_tiles_done": 2, "imaging.label_fraction.a": 0.5})},
        _arrays={"labels": labels, "fraction.a": (labels == 0).astype(float)})}
    page = write_report(run, tmp_path)
    text = page.read_text(encoding="utf-8")
    assert "imaging.label_fraction.a" in text and "4 × 6 px in 2 tiles" in text
    assert "6 of 6 tile frames recorded" in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert [s.rsplit("_", 2)[-2:] for s in srcs] == [["map", "data.png"], ["map", "results.png"]]
    assert all((tmp_path / s).read_bytes()[:8] == PNG for s in srcs)


def test_non_xafs_run_is_refused(tmp_path):
    run = RunData(uid="u" * 36, start={"uid": "u" * 36, "xafs_kind": ""}, stop={}, events=pd.DataFrame())
    with pytest.raises(InputError, match="not an XAFS scan or map"):
        write_report(run, tmp_path)
