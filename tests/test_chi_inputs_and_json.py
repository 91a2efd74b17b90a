"""χ(k) files are recognised by every command that takes spectra, and every ``--json`` is strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xafs_stream.cli.common import strict_json
from xafs_stream.cli.main import main
from xafs_stream.data import SPECTRA_DIR

CU = SPECTRA_DIR / "cu_metal_rt.xdi"


def _strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: bare {c}"))


def _chi_file(tmp_path, header: str | None):
    from xafs_stream.engines.xafs import process_spectrum
    from xafs_stream.io import read_spectrum

    spec = read_spectrum(CU)
    proc = process_spectrum(spec.energy, spec.mu)
    path = tmp_path / ("cu_chi.dat" if header else "cu_chi_plain.dat")
    np.savetxt(path, np.c_[proc.k, proc.chi], header=header or "")
    return path


@pytest.mark.parametrize("header", ["k chi", None])
def test_analyze_reads_a_chi_file_as_chi_and_gives_the_numbers_of_the_mu_path(tmp_path, capsys, header):
    """The issue's case: ``analyze cu_chi.dat`` took k for keV energies and said "no edge"."""
    chi_path = _chi_file(tmp_path, header)
    assert main(["analyze", str(CU), str(chi_path), "--json"]) == 0
    mu_row, chi_row = _strict(capsys.readouterr().out)
    assert chi_row["input"] == "chi" and chi_row["e0"] is None
    for key in ("kmin", "kmax", "kmax_suggest"):
        assert chi_row[key] == mu_row[key]
    assert chi_row["noise_chi"] == pytest.approx(mu_row["noise_chi"], rel=1e-6)
    assert chi_row["quality"] == "ok"
    assert main(["analyze", str(chi_path)]) == 0
    out = capsys.readouterr().out
    assert "χ(k) file" in out and "no edge" not in out and "quality: ok" in out


def test_a_short_chi_file_gets_a_verdict_and_a_forced_chi_reads_unnamed_columns(tmp_path, capsys):
    k = np.arange(0, 7.0, 0.05)
    path = tmp_path / "short.txt"
    np.savetxt(path, np.c_[k + 2.0, 0.1 * np.sin(5 * k)])  # starts at k = 2: not guessed as k
    assert main(["analyze", str(path), "--chi", "--json"]) == 0  # FT k 3-7.5: warn, not bad
    (row,) = _strict(capsys.readouterr().out)
    assert row["kmax"] == 7.5
    assert row["quality"] == "warn" and any("k range 3-7.5" in r for r in row["quality_reasons"])
    assert main(["analyze", str(path), "--chi", "--kmax", "4.5"]) == 3
    assert "quality: bad (FT k range 3-4.5" in capsys.readouterr().out


def test_spm_and_einstein_json_are_strict(tmp_path, capsys):
    out = tmp_path / "spm.json"
    main(["spm", str(CU), "--paths", "packaged:cu_fcc_a3.615_feff6l", "--bootstrap", "0", "--json", str(out)])
    capsys.readouterr()
    doc = _strict(out.read_text())
    assert doc["shells"]
    assert _strict(strict_json({"a": float("nan"), "b": np.float32(1.5), "c": (1, float("inf"))})) == {
        "a": None, "b": 1.5, "c": [1, None]}
