"""Every result carries a verdict (ok / warn / bad with reasons): judged by the engines from their own
diagnostics, stored with the result and on the run (queryable), printed by the CLI, announced by events."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from xafs_stream.analyses.preprocess import normalize_spectrum
from xafs_stream.analyses.registry import AnalysisResult
from xafs_stream.cli.main import main
from xafs_stream.core import ResultRecord, WorkUnit
from xafs_stream.data import SPECTRA_DIR
from xafs_stream.engines.bayes.verdict import judge_selection
from xafs_stream.engines.imaging.verdict import judge_pixels
from xafs_stream.engines.verdict import THRESHOLDS, Verdict
from xafs_stream.engines.xafs import calibrate_energy, process
from xafs_stream.engines.xafs.verdict import e0_rival, judge_calibration, judge_processing, local_slopes
from xafs_stream.io import read_spectrum

CU = SPECTRA_DIR / "cu_metal_rt.xdi"
CU_PATHS = "packaged:cu_fcc_a3.615_feff6l"


def test_levels_only_get_worse_and_the_line_names_every_reason():
    v = Verdict()
    assert v.line() == "quality: ok"
    v.warn("a").bad("b").warn("c")
    assert v.level == "bad" and v.line() == "quality: bad (a; b; c)"
    w = Verdict().warn("x")
    w.merge(Verdict().bad("y"), prefix="μ(E): ")
    assert w.level == "bad" and w.reasons == ["x", "μ(E): y"]


def test_a_clean_foil_is_ok_and_a_foil_cut_above_the_edge_is_bad():
    spec = read_spectrum(CU)
    full = process(spec.energy, spec.mu)
    assert judge_processing(full).level == "ok"
    keep = spec.energy < 8979 + 150  # the case: χ(k) only to k ≈ 6 Å⁻¹
    short = process(spec.energy[keep], spec.mu[keep])
    v = judge_processing(short)
    assert v.level == "bad" and any("FT k range 3-5 Å⁻¹" in r for r in v.reasons)


def test_a_weak_edge_in_noise_is_flagged():
    """An edge step 5x its standard error: significant (min_edge_snr 3), but not ok."""
    rng = np.random.default_rng(3)
    energy = np.linspace(8800, 9600, 500)
    step = 0.02
    mu = step * (0.5 + np.arctan((energy - 8979) / 2) / np.pi)
    for scale in np.geomspace(1e-3, 2e-2, 30):
        noisy = mu + rng.normal(0, scale, energy.size)
        try:
            proc = process(energy, noisy)
        except Exception:
            continue
        snr = proc.pre.edge_step / proc.pre.edge_step_err
        if THRESHOLDS["edge_snr_bad"] < snr < THRESHOLDS["edge_snr_warn"]:
            v = judge_processing(proc)
            assert v.level in ("warn", "bad") and any("only" in r and "its error" in r for r in v.reasons)
            return
    pytest.fail("no noise level gave an edge between 3 and 10 standard errors")


def _two_rises(energy, second):
    """μ in edge-step units: a half step at 7112 eV and the other half at ``second`` eV, both arctan with a
    half width of 1.5 eV (equal slopes: a metal's shoulder and main rise), on a flat post-edge."""
    return sum(0.5 * (0.5 + np.arctan((energy - c) / 1.5) / np.pi) for c in (7112.0, second))


def _scan(sigma, seed, second):
    energy = np.r_[np.arange(6960, 7080, 5.0), np.arange(7080, 7150, 0.5), np.arange(7150, 7700, 3.0)]
    mu = _two_rises(energy, second) + np.random.default_rng(seed).normal(0, sigma, energy.size)
    return process(energy, mu)


def test_an_e0_that_noise_can_move_between_two_rises_is_flagged():
    """Two rises 9 eV apart with equal slopes: which one is the steepest point (E0) is decided by noise. Every
    scan whose E0 is at either rise names the other one; the clean spectrum too (the slopes are equal)."""
    hits = 0
    for seed in range(10):
        proc = _scan(0.005, seed, 7121.0)
        v = judge_processing(proc)
        other = 7121.0 if abs(proc.e0 - 7112.0) < 2 else 7112.0
        rival = e0_rival(proc)
        assert v.level != "ok" and rival is not None, (seed, proc.e0)
        assert abs(rival.energy - other) < 2.0, (proc.e0, rival)
        assert any("E0" in r and "uncertain" in r for r in v.reasons)
        hits += abs(proc.e0 - 7121.0) < 2
    assert 0 < hits < 10  # noise really moves E0 between the two rises


def test_one_clear_rise_in_noise_has_no_rival():
    """The second rise 9 eV away but half as steep (width 3 eV): E0 stays put and nothing is flagged."""
    energy = np.r_[np.arange(6960, 7080, 5.0), np.arange(7080, 7150, 0.5), np.arange(7150, 7700, 3.0)]
    mu = 0.5 * (0.5 + np.arctan((energy - 7112) / 1.5) / np.pi) + 0.5 * (0.5 + np.arctan((energy - 7121) / 3) / np.pi)
    for seed in range(10):
        proc = process(energy, mu + np.random.default_rng(seed).normal(0, 0.005, energy.size))
        assert abs(proc.e0 - 7112.0) < 1.0 and e0_rival(proc) is None, (seed, proc.e0, e0_rival(proc))
    for path in sorted(SPECTRA_DIR.glob("*.xdi")):  # the packaged measured spectra: one clear E0 each
        spec = read_spectrum(path)
        assert e0_rival(process(spec.energy, spec.mu)) is None, path.name


def test_a_reference_foil_calibration_is_judged():
    """A clean reference: ok. A monochromator 8 eV off: the shift is named. A noisy reference whose two rises
    are equally steep: its E0 is named uncertain, with the calibration error it could cause (9 eV)."""
    energy = np.r_[np.arange(6960, 7080, 5.0), np.arange(7080, 7150, 0.5), np.arange(7150, 7700, 3.0)]
    one = 0.5 + np.arctan((energy - 7112.0) / 1.5) / np.pi
    cal = calibrate_energy(energy, one, e0_reference=7112.0)
    assert judge_calibration(energy, one, cal).level == "ok" and abs(cal.shift) < 0.5
    off = 0.5 + np.arctan((energy - 7120.0) / 1.5) / np.pi  # energy axis 8 eV off
    v = judge_calibration(energy, off, calibrate_energy(energy, off, e0_reference=7112.0))
    assert v.level == "warn" and any("shifts the energy by -8.00 eV" in r for r in v.reasons), v.reasons
    noisy = _two_rises(energy, 7121.0) + np.random.default_rng(0).normal(0, 0.005, energy.size)
    v = judge_calibration(energy, noisy, calibrate_energy(energy, noisy, e0_reference=7112.0))
    assert v.level == "warn" and any("may be off by" in r for r in v.reasons), v.reasons


def test_local_slopes_on_a_non_uniform_grid():
    energy = np.array([0.0, 0.1, 0.15, 0.9, 1.0, 1.05, 3.0, 7.0])
    slope, u = local_slopes(energy, 2.5 * energy + 1.0, np.array([0.5, 7.0]), 1.0)
    assert np.isclose(slope[0], 2.5) and np.isnan(slope[1])  # one point near 7 eV: no slope
    x = energy[np.abs(energy - 0.5) <= 1.0]
    assert np.isclose(u[0], 1 / np.sqrt(((x - x.mean()) ** 2).sum()))


def test_the_cli_says_bad_in_one_line_and_exits_3_without_numpy_noise(tmp_path, capfd):
    spec = read_spectrum(CU)
    keep = spec.energy < 8979 + 150
    short = tmp_path / "cu_short.dat"
    np.savetxt(short, np.column_stack([spec.energy[keep], spec.mu[keep]]), header="energy mu")
    assert main(["spm", str(short), "--paths", CU_PATHS]) == 3
    out, err = capfd.readouterr()
    line = [x for x in out.splitlines() if x.startswith("quality:")]
    assert len(line) == 1 and line[0].startswith("quality: bad (")
    assert ("relative error above 50%" in line[0] or "is not determined" in line[0]) and "independent points" in line[0]
    assert "Warning" not in err and "overflow" not in err
    assert main(["spm", str(CU), "--paths", CU_PATHS]) == 0
    out, _ = capfd.readouterr()
    assert "\nquality: ok\n" in out


def test_input_that_cannot_be_read_is_one_line(tmp_path, capfd):
    no_energy = tmp_path / "no_energy.dat"
    no_energy.write_text("# i0 itrans\n" + "".join(f"{1000 + i} {900 - i}\n" for i in range(50)))
    unordered = tmp_path / "unordered.dat"
    spec = read_spectrum(CU)
    order = np.arange(spec.energy.size)
    order[[10, 11]] = order[[11, 10]]
    np.savetxt(unordered, np.column_stack([spec.energy[order], spec.mu[order]]), header="energy mu")
    nan_energy = tmp_path / "nan_energy.dat"
    e = spec.energy.copy()
    e[5] = np.nan
    np.savetxt(nan_energy, np.column_stack([e, spec.mu]), header="energy mu")
    assert main(["analyze", str(no_energy), str(unordered), str(nan_energy)]) == 2
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(x.startswith("xafs-stream analyze: error: ") for x in lines), err
    assert "no energy column among ['i0', 'itrans']" in lines[0]
    assert "increasing" in lines[1]
    assert "NaN" in lines[2]
    assert "Traceback" not in err and "Warning" not in err
    # the energy column named on the command line is used
    assert main(["analyze", str(no_energy), "--energy-column", "i0", "--mu-column", "itrans"]) in (2, 3)


def test_bayes_verdict_rules():
    """R-hat bounds, K at the top of the range, and an undecided K (fake selection: the rules only)."""
    def fits(*pairs):
        return [SimpleNamespace(name=f"K={i + 1}", F=f, F_se=se) for i, (f, se) in enumerate(pairs)]

    good = SimpleNamespace(rhat_max=1.01, exchange_min=0.3)
    clear = SimpleNamespace(fits=fits((10.0, 0.05), (2.0, 0.05), (4.0, 0.05)), best=1)
    assert judge_selection(clear, good).level == "ok"
    top = SimpleNamespace(fits=fits((10.0, 0.05), (4.0, 0.05), (2.0, 0.05)), best=2)
    assert judge_selection(top, good).reasons == ["K=3 is the largest model searched: extend the range"]
    close = SimpleNamespace(fits=fits((10.0, 0.05), (2.0, 0.1), (2.2, 0.1)), best=1)
    assert re.match(r"undecided: K=2 vs K=3, ΔF = 0\.20 ± 0\.14 nat", judge_selection(close, good).reasons[0])
    assert judge_selection(clear, SimpleNamespace(rhat_max=1.1, exchange_min=0.3)).level == "warn"
    assert judge_selection(clear, SimpleNamespace(rhat_max=1.3, exchange_min=0.3)).level == "bad"
    assert judge_selection(clear, SimpleNamespace(rhat_max=float("nan"), exchange_min=0.3)).level == "bad"
    assert "exchange" in judge_selection(clear, SimpleNamespace(rhat_max=1.0, exchange_min=0.01)).reasons[0]


def test_map_pixels_without_the_element_and_poor_references():
    assert judge_pixels(100, 2, np.full(98, 0.01)).level == "ok"
    assert judge_pixels(100, 20).level == "warn"
    assert judge_pixels(100, 80).level == "bad"
    assert judge_pixels(100, 100).reasons == ["no pixel shows the element's edge"]
    assert judge_pixels(100, 0, np.full(100, 0.3)).level == "bad"


def test_a_guessed_energy_column_is_a_warning_on_the_stored_result():
    spec = read_spectrum(CU)
    unit = WorkUnit("r", "spectrum", 0, {"energy": spec.energy, "mu": spec.mu}, {"energy_guessed": "col 1"})
    res = normalize_spectrum(unit, {}, {})
    assert res.verdict == "warn" and res.verdict_reasons == ["energy column guessed: col 1"]


def test_verdicts_are_stored_on_the_result_and_the_run_and_can_be_queried(tiled):
    from tiled.queries import Key

    from xafs_stream.client.catalog import parse_where
    from xafs_stream.storage.layout import RESULTS_ROOT
    from xafs_stream.storage.results import ResultStore

    store = ResultStore(tiled.client)
    runs = {}
    for level in ("ok", "warn", "bad"):
        run = f"verdict-{level}-{np.random.default_rng().integers(1 << 30)}"
        result = AnalysisResult(summary={"spm.n_shells": 1}, verdict=level,
                                verdict_reasons=[] if level == "ok" else [f"reason {level}"])
        event = store.write(ResultRecord(run_uid=run, unit_id=f"{run}:spectrum:merge", kind="spectrum",
                                         index="merge", analysis="spm", version="1", status="ok", result=result,
                                         ))
        assert event["verdict"] == level
        runs[level] = run
        md = tiled.client[RESULTS_ROOT][run]["spm"]["merge"].metadata
        assert md["verdict"] == level and md["verdict_reasons"] == ([] if level == "ok" else [f"reason {level}"])
    error = "verdict-error"
    store.write(ResultRecord(run_uid=error, unit_id=f"{error}:spectrum:merge", kind="spectrum", index="merge",
                             analysis="spm", version="1", status="error", error="boom"))
    (cond,) = parse_where("quality.spm==bad")
    assert cond.tiled_key() == "quality.spm"
    found = set(tiled.client[RESULTS_ROOT].search(Key("quality.spm") == "bad"))
    assert runs["bad"] in found and error in found and runs["warn"] not in found and runs["ok"] not in found
    # xafs.quality's own summary field keeps its name
    assert parse_where("quality.bad==true")[0].tiled_key() == "summary.quality.bad"


def test_watch_prints_the_verdict():
    from xafs_stream.cli.watch import format_event
    from xafs_stream.transport.events import ResultEvent

    event = ResultEvent(run_uid="abcdef123", analysis="bayes.xanes", unit="merge", unit_id="u", path="p",
                        status="ok", family="container", summary={"bayes": {"K": 4}}, written=0.0,
                        verdict="bad", verdict_reasons=("not converged: R-hat 1.69 above 1.2",))
    assert format_event(event).endswith("bayes.K=4 | quality: bad (not converged: R-hat 1.69 above 1.2)")


def test_the_rescan_check_gives_its_verdict_too():
    """xafs.quality: a beam dump is bad; in a merge, some bad repeats are a warning (left out of the merge),
    all bad is bad."""
    from xafs_stream.analyses.quality import quality

    spec = read_spectrum(CU)
    n = spec.energy.size
    i0 = 1e6 * (1 - 0.1 * np.arange(n) / n)  # a slowly decaying ring current (a constant one reads as saturated)
    dumped = i0.copy()
    dumped[100:103] = 10.0  # beam lost for three points
    good = quality(WorkUnit("r", "spectrum", 0, {"energy": spec.energy, "mu": spec.mu, "i0": i0}), {}, {})
    assert (good.verdict, good.verdict_reasons) == ("ok", [])
    bad = quality(WorkUnit("r", "spectrum", 1, {"energy": spec.energy, "mu": spec.mu, "i0": dumped}), {}, {})
    assert bad.verdict == "bad" and bad.verdict_reasons[0].startswith("beam dump at 3 point(s)")

    def merge(*i0s):
        arrays = {"energy_repeats": np.tile(spec.energy, (len(i0s), 1)), "mu_repeats": np.tile(spec.mu, (len(i0s), 1)),
                  "i0_repeats": np.vstack(i0s)}
        return quality(WorkUnit("r", "spectrum", "merge", arrays), {}, {})

    some = merge(i0, dumped, i0)
    assert some.verdict == "warn" and some.verdict_reasons[0].startswith("repeat 1: beam dump")
    assert merge(dumped, dumped).verdict == "bad" and merge(i0, i0).verdict == "ok"
