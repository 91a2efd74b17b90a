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
from xafs_stream.engines.xafs import process
from xafs_stream.engines.xafs.verdict import judge_processing
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
