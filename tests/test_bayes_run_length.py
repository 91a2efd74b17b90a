"""Honest free-energy errors: the chains' scatter is part of the quoted error, the run-length drift is
measured, runs are extended until the best two K are resolved or the time budget is spent (and the verdict
says which), and ``--model peaks`` uses Nagata et al. (2012)'s priors as published unless told otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xafs_stream.cli.main import main
from xafs_stream.engines.bayes import RemcSettings, decompose_peaks, free_energy, nagata_peak_model, run_remc
from xafs_stream.engines.bayes.sampler import extend_run
from xafs_stream.engines.bayes.verdict import judge_selection

X = np.linspace(0.0, 3.0, 101)
TRUE = [(0.587, 1.210, 95.689), (1.522, 1.455, 146.837), (1.183, 1.703, 164.469)]
Y = sum(a * np.exp(-b * (X - m) ** 2 / 2) for a, m, b in TRUE) + 0.1 * np.random.default_rng(7).standard_normal(101)
SHORT = RemcSettings(n_replicas=10, n_chains=4, n_burn=150, n_sweeps=200)


def test_the_quoted_error_includes_the_chains_scatter_and_the_drift_is_measured():
    model = nagata_peak_model(X, Y, 2)
    run = run_remc(model, Y, beta_max=100.0, settings=SHORT, seed=3)
    fe = free_energy(run.betas, run.energies, X.size)
    assert fe.se == max(fe.se_batch, fe.se_chains)
    assert fe.se_chains == pytest.approx(np.std(fe.per_chain, ddof=1) / 2)
    half = free_energy(run.betas, run.energies[:100], X.size)
    assert fe.drift == pytest.approx(half.F - fe.F)


def test_an_extended_run_is_the_two_records_joined():
    model = nagata_peak_model(X, Y, 1)
    run = run_remc(model, Y, beta_max=100.0, settings=SHORT, seed=4)
    more = extend_run(model, Y, run, 300, seed=5)
    assert more.energies.shape[0] == 500 and more.samples.shape[0] == 500 // SHORT.thin
    assert np.array_equal(more.energies[:200], run.energies) and more.settings.n_sweeps == 500
    assert np.all(more.round_trips >= run.round_trips) and more.elapsed_s > run.elapsed_s


def test_runs_are_extended_until_the_target_or_the_budget():
    sel = decompose_peaks(X, Y, k_range=range(1, 3), noise=0.1, settings=SHORT, seed=1, target_se=0.5,
                          budget_s=300)
    info = sel.run_length
    assert info["stopped"] == "target reached" and info["se_diff"] <= 0.5 and info["pair"][0] == "K=2"
    tight = decompose_peaks(X, Y, k_range=range(2, 4), noise=0.1, settings=SHORT, seed=1, target_se=1e-4,
                            budget_s=0.1)
    assert tight.run_length["stopped"] == "time budget spent" and tight.run_length["extensions"] == 0
    v = judge_selection(tight, type("R", (), {"rhat_max": 1.0, "exchange_min": 0.5})())
    assert v.level == "warn" and any(r.startswith("run length: se(ΔF)") for r in v.reasons)
    a, b, gap, se, drift = tight.contest()
    assert gap >= 0 and se == pytest.approx(math.hypot(tight.fits[a].F_se, tight.fits[b].F_se))


def test_cli_peaks_uses_the_published_priors_and_says_so(tmp_path, capsys):
    path = tmp_path / "peaks.txt"
    np.savetxt(path, np.column_stack([X, Y]))
    fast = ["--replicas", "10", "--burn", "150", "--sweeps", "200", "--target-se", "0"]
    main(["bayes", str(path), "--model", "peaks", "--kmin", "2", "--kmax", "3", "--noise", "0.1", *fast])
    out = capsys.readouterr().out
    assert "Nagata et al. (2012) priors as published" in out and "run length: one run per candidate" in out
    far = tmp_path / "far.txt"  # far outside the published centre prior: a one-line error
    np.savetxt(far, np.column_stack([X + 100, Y]))
    assert main(["bayes", str(far), "--model", "peaks", "--kmax", "2", "--noise", "0.1", *fast]) == 2
    assert "center prior Normal(mean=1.5" in capsys.readouterr().err
    shifted = tmp_path / "shifted.txt"  # half of the published centre prior outside the data: a warning
    np.savetxt(shifted, np.column_stack([X + 1.5, Y]))
    main(["bayes", str(shifted), "--model", "peaks", "--kmin", "1", "--kmax", "2", "--noise", "0.1", *fast])
    assert "use --priors scaled" in capsys.readouterr().out
    main(["bayes", str(shifted), "--model", "peaks", "--kmin", "1", "--kmax", "2", "--noise", "0.1",
          "--priors", "scaled", *fast])
    out = capsys.readouterr().out
    assert "priors scaled to the data" in out and "use --priors scaled" not in out
