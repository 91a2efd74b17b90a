"""``xafs-stream bayes``: output (F table, chosen K, peak table), files written, and one-line errors."""

import json
import re

import numpy as np
import pytest

from xafs_stream.cli.main import main
from xafs_stream.data import SPECTRA_DIR, XANES_REFS_DIR

FAST = ["--replicas", "10", "--burn", "150", "--sweeps", "300", "--target-se", "0"]  # run length: test_bayes_run_length
TRUE = [(1.0, 1.2, 60.0), (0.7, 1.7, 90.0)]  # two Gaussian peaks (height, centre, b = 1/sigma²)


@pytest.fixture(scope="module")
def two_peaks(tmp_path_factory):
    x = np.linspace(0, 3, 121)
    y = sum(a * np.exp(-b * (x - m) ** 2 / 2) for a, m, b in TRUE)
    y = y + 0.05 * np.random.default_rng(0).standard_normal(x.size)
    path = tmp_path_factory.mktemp("bayes") / "two_peaks.txt"
    np.savetxt(path, np.column_stack([x, y]), header="x y")
    return path


def _peak_rows(out):
    rows = re.findall(r"^\s+(\d)\s+([-\d.e+]+)\s+([-\d.e+]+)\s+\[", out, flags=re.MULTILINE)
    return [(int(i), float(c), float(e)) for i, c, e in rows]


def test_peaks_model_prints_table_chosen_k_and_peaks(two_peaks, tmp_path, capsys):
    png, js = tmp_path / "fit.png", tmp_path / "fit.json"
    rc = main(
        [
            "bayes",
            str(two_peaks),
            "--model",
            "peaks",
            "--kmax",
            "3",
            "--noise",
            "0.05",
            *FAST,
            "--plot",
            str(png),
            "--json",
            str(js),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "chosen K = 2" in out
    for k in (1, 2, 3):
        assert re.search(rf"^\s+{k}\s+-?\d+\.\d+\s+\d+\.\d+", out, flags=re.MULTILINE)
    rows = _peak_rows(out)
    assert [r[0] for r in rows] == [1, 2]
    for (_, c, err), (a, m, b) in zip(rows, TRUE):
        assert abs(c - m) < max(4 * err, 0.01)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(js.read_text())
    assert data["chosen"] == "K=2" and len(data["peaks"]) == 2 and data["noise_mode"] == "known"


def test_noise_auto_reports_an_estimate(two_peaks, capsys):
    rc = main(["bayes", str(two_peaks), "--model", "peaks", "--kmin", "2", "--kmax", "2", *FAST])
    out = capsys.readouterr().out
    assert rc == 0
    noise = float(re.search(r"chosen K = 2 \(lowest free energy; noise ([\d.e+-]+) estimated", out).group(1))
    assert abs(noise / 0.05 - 1) < 0.2


def test_collapsed_moves_from_the_command_line_find_the_two_peaks(two_peaks, capsys):
    rc = main(["bayes", str(two_peaks), "--model", "peaks", "--kmax", "3", "--noise", "0.05", "--collapsed", *FAST])
    out = capsys.readouterr().out
    assert rc == 0 and "chosen K = 2" in out
    for (_, c, err), (a, m, b) in zip(_peak_rows(out), TRUE):
        assert abs(c - m) < max(4 * err, 0.01)


def test_xanes_on_normalised_reference_reports_preedge_centroid(capsys):
    path = XANES_REFS_DIR / "FeLibNov2021.nor"
    # the default sampler of --model xanes (smc), smaller populations
    rc = main(["bayes", str(path), "--column", "fe(iii)po4", "--normalized", "--kmax", "2", "--particles", "48",
               "--target-se", "0"])
    out = capsys.readouterr().out
    # short test chains: the verdict decides the exit code, and the two agree
    verdict = re.search(r"^quality: (ok|warn|bad)", out, re.M).group(1)
    assert rc == (3 if verdict == "bad" else 0)
    assert "chosen K = " in out
    c = float(re.search(r"pre-edge centroid = ([\d.]+)", out).group(1))
    assert abs(c - 7114.8) < 0.5
    # the centroid's own R-hat is printed, and above 1.05 it is in the verdict
    rhat = float(re.search(r"pre-edge centroid = .*; R-hat ([\d.]+)\)", out).group(1))
    assert (rhat > 1.05) == ("pre-edge centroid" in re.search(r"^quality: .*$", out, re.M).group(0))


def test_xanes_on_raw_mu_uses_the_preprocessing_engine(capsys):
    rc = main(
        [
            "bayes",
            str(SPECTRA_DIR / "fe2o3_rt1.xmu"),
            "--xrange",
            "-15:25",
            "--kmax",
            "1",
            "--no-preedge",
            "--sampler",
            "remc",
            *FAST,
        ]
    )
    out = capsys.readouterr().out
    verdict = re.search(r"^quality: (ok|warn|bad)", out, re.M).group(1)
    assert rc == (3 if verdict == "bad" else 0)
    assert "normalised here" in out and "E0-15 .. E0+25 eV" in out


@pytest.mark.parametrize("flag", [[], ["--stop-unconverged"]])
def test_xanes_search_stops_at_the_first_unconverged_k(capsys, flag):
    """The live service's search over K, the default of ``--model xanes`` (``--stop-unconverged`` says it
    again). Whatever the chains do, the F table holds only converged fits (or the first one), and a stopped
    search says where in the verdict."""
    rc = main(["bayes", str(SPECTRA_DIR / "cu_metal_rt.xdi"), "--kmax", "3", "--no-preedge", "--particles", "32",
               "--target-se", "0", *flag])
    out = capsys.readouterr().out
    quality = re.search(r"^quality: (ok|warn|bad)(.*)$", out, re.M)
    assert rc == (3 if quality.group(1) == "bad" else 0)
    table = out.split("F (nat)")[1].split("chosen K")[0]
    rows = re.findall(r"^\s+(\d)\s+-?\d", table, re.M)
    assert rows and rows == [str(k) for k in range(1, len(rows) + 1)]
    if len(rows) < 3:
        assert "did not converge" in quality.group(2)


def test_every_k_fits_the_whole_range(capsys):
    rc = main(["bayes", str(SPECTRA_DIR / "cu_metal_rt.xdi"), "--kmax", "2", "--no-preedge", "--particles", "32",
               "--target-se", "0", "--every-k"])
    out = capsys.readouterr().out
    table = out.split("F (nat)")[1].split("chosen K")[0]
    assert re.findall(r"^\s+(\d)\s+-?\d", table, re.M) == ["1", "2"]
    assert rc in (0, 3) and "did not converge" not in re.search(r"^quality: .*$", out, re.M).group(0)
    assert main(["bayes", str(SPECTRA_DIR / "cu_metal_rt.xdi"), "--every-k", "--stop-unconverged"]) == 2
    assert "--every-k and --stop-unconverged: choose one" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--kmin", "0"], "K must be >= 1"),
        (["--noise", "-1"], "--noise must be a positive number"),
        (["--xrange", "10:20"], "contains 0 data point"),
        (["--xrange", "2:1"], "A < B"),
        (["--xrange", "a:b"], "two numbers"),
        (["--sampler", "smc"], "--replicas, --burn, --sweeps apply to --sampler remc, but the sampler is smc"),
        (["--particles", "10"], "--particles apply to --sampler smc, but the sampler is remc"),
    ],
)
def test_bad_options_give_one_line_errors(two_peaks, capsys, args, message):
    rc = main(["bayes", str(two_peaks), "--model", "peaks", *args, *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_smc_settings_give_one_line_errors(two_peaks, capsys):
    rc = main(["bayes", str(two_peaks), "--model", "peaks", "--sampler", "smc", "--particles", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "n_particles >= 8" in err and len(err.strip().splitlines()) == 1


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    assert main(["bayes", str(tmp_path / "missing.txt"), "--model", "peaks"]) == 2
    assert "no such file" in capsys.readouterr().err
    nan_file = tmp_path / "nan.txt"
    nan_file.write_text("0 1\n1 nan\n2 3\n3 4\n")
    assert main(["bayes", str(nan_file), "--model", "peaks"]) == 2
    assert "NaN" in capsys.readouterr().err
    text = tmp_path / "text.txt"
    text.write_text("0 1\n1 2\nhello world\n")
    assert main(["bayes", str(text), "--model", "peaks"]) == 2
    assert "non-numeric" in capsys.readouterr().err
