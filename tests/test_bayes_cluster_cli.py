"""``xafs-stream bayes FILE --model cluster``: Hamiltonian selection over Δ regions from the command line,
checked against spectra made from the published CeO2 and La2O3 cluster parameters (Mototake et al. 2019)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from xafs_stream.cli.main import main
from xafs_stream.engines.bayes import PUBLISHED, cluster_spectrum, delta_regions
from xafs_stream.engines.errors import InputError

FAST = ["--replicas", "12", "--burn", "300", "--sweeps", "600", "--target-se", "0"]


def _write(tmp_path, compound, seed):
    x = np.linspace(-20, 12, 81)
    p = PUBLISHED[compound]
    f = 10 * cluster_spectrum(x, p["delta"], p["v"], p["uff"], p["ufc"], p["gamma"])[0]
    noise = 0.05 * f.max()
    y = f + noise * np.random.default_rng(seed).standard_normal(x.size)
    path = tmp_path / f"{compound}.txt"
    np.savetxt(path, np.c_[x, y], header="energy intensity")
    return path, noise


@pytest.mark.parametrize("compound,region", [("CeO2", "Δ -2..8"), ("La2O3", "Δ 8..18")])
def test_the_cluster_scan_finds_the_published_delta_and_its_free_delta_check_holds(
    tmp_path, capsys, compound, region
):
    path, noise = _write(tmp_path, compound, seed=2)
    out_json = tmp_path / "scan.json"
    code = main(["bayes", str(path), "--model", "cluster", "--regions", "2", "--noise", f"{noise:.6g}",
                 "--seed", "4", "--json", str(out_json), *FAST])
    out = capsys.readouterr().out
    assert f"chosen region: {region}" in out
    m = re.search(r"95 % \[([-\d.]+), ([-\d.]+)\]\)", out)
    assert m and float(m.group(1)) <= PUBLISHED[compound]["delta"] <= float(m.group(2)), out
    assert re.search(r"^quality: (ok|warn|bad)", out, re.M)
    doc = json.loads(out_json.read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert doc["chosen"] == region
    # F(Δ free) = -ln Σ (w/W) exp(-F_r) within the stated errors (2 se)
    c = doc["consistency"]
    assert abs(c["difference"]) <= 2 * c["se"], c
    assert code == (3 if doc["quality"] == "bad" else 0)


def test_cluster_options_are_checked_in_one_line(tmp_path, capsys):
    path, _ = _write(tmp_path, "CeO2", seed=0)
    assert main(["bayes", str(path), "--model", "cluster", "--fix", "uff", *FAST]) == 2
    assert "--fix must be NAME=VALUE" in capsys.readouterr().err
    assert main(["bayes", str(path), "--model", "cluster", "--delta-range", "5:1", *FAST]) == 2
    assert "A < B" in capsys.readouterr().err
    with pytest.raises(InputError, match="integer >= 1"):
        delta_regions(0, 1, 0)
    assert delta_regions(-2, 18, 4) == [(-2, 3), (3, 8), (8, 13), (13, 18)]
