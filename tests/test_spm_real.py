"""SpM on real foils against crystallographic truth and xraylarch ``feffit`` on the same χ(k) and ranges.

χ(k) comes from ``tests/fixtures/feffit/*_chi.txt`` (the packaged spectra through the project's
preprocessing, written by ``tools/make_feffit_fixtures.py``), so SpM and feffit always see identical data.
With xraylarch installed feffit runs here; without it the numbers stored by that script are used.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from xafs_stream.data import FEFF_DIR
from xafs_stream.engines.spm import spm_fit
from xafs_stream.io.feff import read_feff_dir

FIX = Path(__file__).parent / "fixtures" / "feffit"
TOOLS = Path(__file__).resolve().parents[1] / "tools" / "make_feffit_fixtures.py"
REFERENCE = json.loads((FIX / "feffit_reference.json").read_text())


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def load_chi(name):
    data = np.loadtxt(FIX / f"{name}_chi.txt")
    return data[:, 0], data[:, 1]


def feffit_reference(case):
    """feffit result for a case of FEFFIT_CASES: live when xraylarch is installed, else the stored one."""
    cfg = REFERENCE["feffit"][case]["config"]
    try:
        import larch  # noqa: F401
    except ImportError:
        return REFERENCE["feffit"][case]["result"], "stored"
    spec = importlib.util.spec_from_file_location("make_feffit_fixtures", TOOLS)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    k, chi = load_chi(cfg["spectrum"].replace(".xdi", ""))
    files = [FEFF_DIR / cfg["path_set"] / f for f in cfg["files"]]
    ranges = {key: cfg[key] for key in ("kmin", "kmax", "kweight", "dk", "rmin", "rmax")}
    return tool.feffit_shells(k, chi, files, **ranges), "live"


def spm_for(case):
    cfg = REFERENCE["feffit"][case]["config"]
    k, chi = load_chi(cfg["spectrum"].replace(".xdi", ""))
    paths = read_feff_dir(FEFF_DIR / cfg["path_set"]).paths
    return spm_fit(
        k,
        chi,
        paths,
        kmin=cfg["kmin"],
        kmax=cfg["kmax"],
        kweight=cfg["kweight"],
        dk=cfg["dk"],
        space="r",
        rmin=cfg["rmin"],
        rmax=cfg["rmax"],
    )


@pytest.mark.larch
def test_cu_foil_first_shell():
    """12 neighbours × S0² at R ≈ 2.54 Å; N, R, σ² within feffit's uncertainty of feffit's values."""
    ref, how = feffit_reference("cu_first_shell")
    res = spm_for("cu_first_shell")
    cu = [s for s in res.shells if s.pair == "Cu-Cu"]
    assert len(cu) == 1, [(s.n, s.r) for s in res.shells]
    shell = cu[0]
    # crystallographic and published truth (shared data README: S0² = 0.93 ± 0.04, R = 2.542 ± 0.003 Å)
    assert shell.n / 12.0 == pytest.approx(0.93, abs=0.08)
    assert shell.r == pytest.approx(2.542, abs=0.01)
    # feffit on the same χ(k), the same k range, weight, window and R range
    f = ref["shells"][0]
    assert abs(shell.sigma2 - f["sigma2"]) < f["sigma2_err"], (shell, f, how)
    assert abs(shell.n - f["n"]) < f["n_err"]
    assert abs(shell.r - f["r"]) < f["r_err"]
    assert abs(res.fit.de0 - ref["de0"]) < ref["de0_err"]
    # SpM's standard errors are of the same size as feffit's (different, documented scalings)
    assert 0.4 < shell.sigma2_err / f["sigma2_err"] < 2.5


@pytest.mark.larch
def test_fe_foil_two_shells_resolved():
    """bcc Fe: the 8 + 6 neighbours at 2.48 / 2.87 Å come out as two Fe-Fe shells."""
    ref, how = feffit_reference("fe_two_shells")
    res = spm_for("fe_two_shells")
    fe = sorted((s for s in res.shells if s.pair == "Fe-Fe" and 2.2 < s.r < 3.1), key=lambda s: s.r)
    assert len(fe) == 2, [(s.n, s.r) for s in res.shells]
    first, second = fe
    assert first.r == pytest.approx(2.4825, abs=0.03)
    assert second.r == pytest.approx(2.8665, abs=0.03)
    assert second.r - first.r > 0.3
    for s in fe:
        assert s.n > 2 * s.n_err
    # the same numbers as feffit with the same two paths on the same data (within feffit's errors)
    for s, f in zip(fe, ref["shells"], strict=True):
        assert abs(s.n - f["n"]) < f["n_err"], (s, f, how)
        assert abs(s.r - f["r"]) < f["r_err"]
        assert abs(s.sigma2 - f["sigma2"]) < f["sigma2_err"]
    # 14 neighbours in total times an S0² of 0.7-1.0
    assert 0.7 * 14 < first.n + second.n < 1.05 * 14


def test_fixture_chi_is_the_packaged_spectrum():
    """The stored χ(k) is what the preprocessing engine gives for the packaged Cu spectrum."""
    pre = pytest.importorskip("xafs_stream.engines.xafs")
    from xafs_stream.data import SPECTRA_DIR
    from xafs_stream.io import read_spectrum

    spec = read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")
    proc = pre.process_spectrum(spec.energy, spec.mu)
    k, chi = load_chi("cu_metal_rt")
    n = min(len(k), len(proc.k))
    assert np.allclose(proc.k[:n], k[:n])
    assert np.max(np.abs((proc.chi[:n] - chi[:n]) * k[:n] ** 2)) < 0.02
