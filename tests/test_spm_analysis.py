"""The worker analysis "spm" called directly with hand-built work units."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xafs_stream.analyses.registry import AnalysisResult, SkipAnalysis, default_registry
from xafs_stream.analyses.spm import find_path_set, spm_analysis
from xafs_stream.engines.errors import InputError
from xafs_stream.core import WorkUnit

FIX = Path(__file__).parent / "fixtures" / "feffit"


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def unit_and_upstream(name: str, sample: str, element: str):
    data = np.loadtxt(FIX / f"{name}_chi.txt")
    unit = WorkUnit(
        run_uid="run1",
        kind="spectrum",
        index=0,
        arrays={"energy": np.linspace(8800, 9800, 50), "mu": np.zeros(50)},
        metadata={"sample": sample, "element": element, "edge": "K"},
    )
    upstream = {
        "xafs.normalize": AnalysisResult(arrays={"k": data[:, 0], "chi": data[:, 1]}, summary={"e0": 8980.5})
    }
    return unit, upstream


def test_registered_with_its_dependency():
    reg = default_registry()
    assert "spm" in reg
    a = reg["spm"]
    assert a.unit_kind == "spectrum" and a.requires == ("xafs.normalize",)


def test_cu_foil_summary_is_flat_and_queryable():
    unit, upstream = unit_and_upstream("cu_metal_rt", "Cu", "Cu")
    res = spm_analysis(unit, upstream, {})
    s = res.summary
    assert s["spm.n_shells"] == 1
    assert s["spm.shell1.pair"] == "Cu-Cu"
    # Cu fcc first shell: 12 × S0² (0.93 ± 0.04) neighbours at 2.542 Å (data README)
    assert s["spm.shell1.N"] == pytest.approx(12 * 0.93, abs=1.0)
    assert s["spm.shell1.R"] == pytest.approx(2.542, abs=0.01)
    assert 0.005 < s["spm.shell1.sigma2"] < 0.012
    for key in (
        "spm.shell1.N_err",
        "spm.shell1.R_err",
        "spm.shell1.sigma2_err",
        "spm.r_factor",
        "spm.redchi",
        "spm.alpha",
        "spm.de0",
    ):
        assert isinstance(s[key], float) and s[key] > 0, key
    assert s["spm.path_set"] == "packaged:cu_fcc_a3.615_feff6l"
    assert all(isinstance(v, (int, float, str, bool)) or v is None for v in s.values())
    # arrays carry their dimension names; everything is JSON-able for storage
    for name, arr in res.arrays.items():
        assert np.ndim(arr) == len(res.dims[name]), name
    assert res.arrays["spm_distribution"].shape == (
        1,
        len(res.arrays["spm_r_grid"]),
        len(res.arrays["spm_sigma2_grid"]),
    )
    json.dumps(res.params)
    json.dumps(res.diagnostics)
    json.dumps(res.summary)


def test_config_maps_sample_then_element(tmp_path):
    cfg = {
        "paths": {"Fe foil": "packaged:fe_bcc_a2.8665_feff6l", "Cu": "packaged:cu_fcc_a3.615_feff6l"},
        "kmax": 13.0,
        "n_bootstrap": 10,
    }
    assert find_path_set(cfg, "fe FOIL", "Fe") == "packaged:fe_bcc_a2.8665_feff6l"
    assert find_path_set(cfg, "CuO", "Cu") == "packaged:cu_fcc_a3.615_feff6l"  # element fallback
    assert find_path_set(cfg, "ZnSe", "Zn") is None
    unit, upstream = unit_and_upstream("fe_metal_rt", "Fe foil", "Fe")
    res = spm_analysis(unit, upstream, cfg)
    assert res.params["kmax"] == 13.0 and res.params["path_set"] == "packaged:fe_bcc_a2.8665_feff6l"
    assert res.summary["spm.n_shells"] == 2
    assert res.summary["spm.shell1.R"] == pytest.approx(2.4825, abs=0.03)
    assert res.summary["spm.shell2.R"] == pytest.approx(2.8665, abs=0.03)
    assert res.summary["spm.shell1.N_err_boot"] > 0


def test_defaults_only_for_metal_samples():
    assert find_path_set({}, "Cu", "Cu") == "packaged:cu_fcc_a3.615_feff6l"
    assert "fe_bcc" not in str(find_path_set({}, "Fe2O3", "Fe"))  # never bcc-Fe paths for an oxide
    assert find_path_set({}, "my catalyst", "Pt") is None
    # the run's own metadata first, then exact names, "<element> <edge>", patterns
    assert find_path_set({}, "my catalyst", "Pt", "L3", "/data/ptpaths") == "/data/ptpaths"
    table = {"paths": {"Fe*O*": "packaged:oxide", "Pt L3": "packaged:pt", "Zn": "packaged:zn"}}
    assert find_path_set(table, "FeO sample 2", "Fe", "K") == "packaged:oxide"
    assert find_path_set(table, "catalyst", "Pt", "L3") == "packaged:pt"
    assert find_path_set(table, "ZnO", "Zn", "K") == "packaged:zn"
    unit, upstream = unit_and_upstream("fe_metal_rt", "Fe3O4 film", "Fe")
    with pytest.raises(SkipAnalysis, match=r"no path set for 'Fe3O4 film' \(element Fe\); set \[analysis.spm\] paths"):
        spm_analysis(unit, upstream, {})
    unit, upstream = unit_and_upstream("cu_metal_rt", "Cu", "Cu")
    with pytest.raises(SkipAnalysis):
        spm_analysis(unit, upstream, {"paths": {}})


def test_chain_from_the_preprocessing_analysis():
    """μ(E) of the Cu foil through the registered ``xafs.normalize`` and then ``spm``."""
    reg = default_registry()
    if "xafs.normalize" not in reg:
        pytest.skip("the preprocessing analysis is not part of this build")
    from xafs_stream.data import SPECTRA_DIR
    from xafs_stream.io import read_spectrum

    spec = read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")
    unit = WorkUnit(
        run_uid="run2",
        kind="spectrum",
        index="merge",
        arrays={"energy": spec.energy, "mu": spec.mu},
        metadata={"sample": "Cu", "element": "Cu", "edge": "K"},
    )
    results = {}
    for analysis in reg.for_kind("spectrum", only={"spm"}):
        results[analysis.name] = analysis.func(unit, {n: results[n] for n in analysis.requires}, {})
    s = results["spm"].summary
    assert s["spm.shell1.R"] == pytest.approx(2.542, abs=0.01)
    assert s["spm.shell1.N"] == pytest.approx(12 * 0.93, abs=1.0)
    no_exafs = AnalysisResult(summary={"has_exafs": False})
    with pytest.raises(SkipAnalysis, match="no EXAFS"):
        spm_analysis(unit, {"xafs.normalize": no_exafs}, {})


def test_bad_upstream_and_bad_data():
    unit, upstream = unit_and_upstream("cu_metal_rt", "Cu", "Cu")
    with pytest.raises(InputError, match="'k' and 'chi'"):
        spm_analysis(unit, {"xafs.normalize": AnalysisResult(arrays={"k": np.arange(10.0)})}, {})
    chi = upstream["xafs.normalize"].arrays["chi"].copy()
    chi[120] = np.nan
    upstream["xafs.normalize"].arrays["chi"] = chi
    with pytest.raises(InputError, match="NaN"):
        spm_analysis(unit, upstream, {})
    with pytest.raises(InputError, match=r"unknown settings \['kmaxx'\]"):
        spm_analysis(unit, unit_and_upstream("cu_metal_rt", "Cu", "Cu")[1], {"kmaxx": 12})
    with pytest.raises(InputError, match="no packaged path set"):
        spm_analysis(
            unit, unit_and_upstream("cu_metal_rt", "Cu", "Cu")[1], {"paths": {"Cu": "packaged:nope"}}
        )
