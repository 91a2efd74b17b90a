"""SpM on compounds with several pairs: no invented shell, no shell lost silently, and the same numbers as
xraylarch's feffit on real FeO and ZnSe spectra with the same paths and ranges (issue: real samples)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from xafs_stream.data import FEFF_DIR
from xafs_stream.engines.spm import path_chi, spm_fit
from xafs_stream.engines.spm.verdict import judge_spm
from xafs_stream.io.feff import read_feff_dir

pytestmark = pytest.mark.usefixtures("one_blas_thread")

FEO = FEFF_DIR / "feo_rocksalt_a4.33_feff6l"
K = 0.05 * np.arange(0, 321)  # 0 … 16 Å⁻¹
# O at 2.10 Å and the metal at 3.00 Å, as the issue asks (rock-salt FeO, slightly compressed), S0² 0.8
TRUTH = [("Fe-O", 6 * 0.8, 2.10, 0.007), ("Fe-Fe", 12 * 0.8, 3.00, 0.010)]


def _two_pair_chi(paths, level: float, seed: int) -> np.ndarray:
    by_pair = {p.pair: p for p in paths if p.is_single_scattering and p.reff < 3.2}
    chi = sum(path_chi(by_pair[pair], K, n=n, r=r, sigma2=s2) for pair, n, r, s2 in TRUTH)
    scale = np.max(np.abs(chi[(K >= 3) & (K <= 14)]))
    return chi + level * scale * np.random.default_rng(seed).standard_normal(K.size)


def _invented(res) -> list[str]:
    """Shells that match no true shell (pair and |ΔR| < 0.1 Å), and duplicates of one."""
    out, used = [], set()
    for sh in res.shells:
        hit = [i for i, (pair, _, r, _) in enumerate(TRUTH) if pair == sh.pair and abs(sh.r - r) < 0.1]
        if not hit or hit[0] in used:
            out.append(f"{sh.pair} {sh.n:.1f} @ {sh.r:.2f}")
        used.update(hit[:1])
    return out


def _realisations(levels, seeds):
    paths = read_feff_dir(FEO).paths
    rows = []
    for level in levels:
        for seed in seeds:
            chi = _two_pair_chi(paths, level, seed)
            res = spm_fit(K, chi, paths, kmin=3, kmax=14)
            found = {sh.pair for sh in res.shells}
            lost = [p for p, *_ in TRUTH if p not in found]
            rows.append((level, seed, _invented(res), lost, judge_spm(res).level))
    return rows


def test_two_pairs_no_invented_shell_and_no_silent_loss():
    """3 noise levels (0.3, 1, 3 % of max|χ|) x 3 realisations, the engine's defaults."""
    rows = _realisations((0.003, 0.01, 0.03), range(3))
    assert not [r for r in rows if r[2]], [r for r in rows if r[2]]
    # a shell lost is never silent: the verdict is not ok
    assert all(r[4] != "ok" for r in rows if r[3]), rows


@pytest.mark.slow
def test_two_pairs_no_invented_shell_in_95_percent_of_60_realisations():
    rows = _realisations((0.003, 0.01, 0.03), range(100, 120))
    invented = [r for r in rows if r[2]]
    print(f"invented shells in {len(invented)} of {len(rows)} realisations: {invented}")
    assert len(invented) <= 0.05 * len(rows)
    assert all(r[4] != "ok" for r in rows if r[3])


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_spm_compounds.py"
    spec = importlib.util.spec_from_file_location("bench_spm_compounds", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("compound", ["FeO", "ZnSe"])
@pytest.mark.parametrize("setting", ["defaults", "larch-like"])
def test_real_compound_matches_feffit_with_the_same_paths_and_ranges(tmp_path, compound, setting):
    """The CLI (no options, or larch-like ranges) against larch's feffit told the structural model: every true
    shell in range found, none extra, N, R and σ² within the combined 1σ errors."""
    pytest.importorskip("larch")
    bench = _bench()
    comp = bench.COMPOUNDS[compound]
    energy, mu = bench.read_mu(bench.spectrum_file(comp["spectrum"]), comp["mu"])
    out = bench.one_run(compound, comp, setting, tmp_path, bench.larch_chi(energy, mu))
    assert out["cli"]["exit_code"] == 0, out["cli"]
    statuses = [row["status"] for row in out["rows"]]
    assert statuses and set(statuses) == {"matched"}, out["rows"]
    for row in out["rows"]:
        assert row["agree"] == {"N": "y", "R": "y", "sigma2": "y"}, row
