"""Reading the field's spectrum files (XDI, Athena / IFEFFIT column files, plain columns) and writing XDI."""

from __future__ import annotations

import numpy as np
import pytest

from xafs_stream.data import SPECTRA_DIR, XANES_REFS_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.io import read_spectrum, write_xdi
from xafs_stream.io.spectrum_file import SpectrumFileError


@pytest.mark.parametrize(
    "name, n_points, element, first_energy",
    [
        ("cu_metal_rt.xdi", 408, "Cu", 8779.0),
        ("fe_metal_rt.xdi", 348, "Fe", 6962.0),
        ("feo_rt1.xdi", 412, "Fe", 6911.7671),
        ("zn_znse_rt.xdi", 469, "Zn", 9509.0),
        ("fe2o3_rt1.xmu", 412, None, 6911.8277),
    ],
)
def test_packaged_spectra(name, n_points, element, first_energy):
    spec = read_spectrum(SPECTRA_DIR / name)
    assert spec.energy.size == spec.mu.size == n_points
    assert spec.energy[0] == pytest.approx(first_energy)
    assert spec.element == element
    assert np.all(np.diff(spec.energy) > 0) and np.all(np.isfinite(spec.mu))


def test_mu_from_intensities_is_log_ratio():
    spec = read_spectrum(SPECTRA_DIR / "zn_znse_rt.xdi")  # columns energy, time, i0, itrans
    assert np.allclose(spec.mu, np.log(spec.columns["i0"] / spec.columns["itrans"]))
    cu = read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")  # has both mutrans and intensities: mutrans wins
    assert np.allclose(cu.mu, cu.columns["mutrans"])


def test_multicolumn_and_athena_headers():
    lib = read_spectrum(XANES_REFS_DIR / "FeLibNov2021.nor", mu_column="Hematite_NP")
    assert np.array_equal(lib.mu, lib.columns["hematite_np"]) and lib.energy[0] == 7090.0
    als = read_spectrum(XANES_REFS_DIR / "als1032_hematite_Fe3.e")
    assert list(als.columns) == ["energy", "mu"]
    with pytest.raises(SpectrumFileError, match="no column 'nope'"):
        read_spectrum(XANES_REFS_DIR / "FeLibNov2021.nor", mu_column="nope")


def test_xdi_round_trip(tmp_path):
    e = np.linspace(8900.0, 9100.0, 101)
    mu = np.tanh((e - 8979) / 3.0)
    meta = {"Element.symbol": "Cu", "Element.edge": "K", "Scan.edge_energy": 8979.0, "Sample.name": "foil"}
    path = write_xdi(
        tmp_path / "x.xdi",
        {"energy": e, "mu": mu, "i0": np.full(e.size, 1e5)},
        meta,
        comments="written by a test",
    )
    text = path.read_text()
    assert text.startswith("# XDI/1.0") and "# Column.2: mu" in text and "# written by a test" in text
    back = read_spectrum(path)
    assert np.allclose(back.energy, e, rtol=0, atol=1e-6) and np.allclose(back.mu, mu, atol=1e-9)
    assert back.element == "Cu" and back.edge == "K" and back.metadata["Scan.edge_energy"] == "8979.0"
    with pytest.raises(InputError, match="Namespace.tag"):
        write_xdi(tmp_path / "bad.xdi", {"energy": e, "mu": mu}, {"symbol": "Cu"})
    with pytest.raises(InputError, match="first column must be 'energy'"):
        write_xdi(tmp_path / "bad.xdi", {"mu": mu, "energy": e})


def test_plain_columns_kev_and_errors(tmp_path):
    plain = tmp_path / "plain.dat"
    plain.write_text("\n".join(f"{7.0 + 0.001 * i:.4f} {0.1 * i:.3f}" for i in range(30)) + "\n")
    spec = read_spectrum(plain)
    assert spec.energy[0] == pytest.approx(7000.0) and spec.energy[1] == pytest.approx(7001.0)  # keV -> eV
    bad = tmp_path / "bad.dat"
    bad.write_text("7000 1\n7001 2\n7002 x\n")
    with pytest.raises(SpectrumFileError, match="bad.dat:3: non-numeric"):
        read_spectrum(bad)
    ragged = tmp_path / "ragged.dat"
    ragged.write_text("7000 1 2\n7001 2\n")
    with pytest.raises(SpectrumFileError, match="row 2 has 2 values"):
        read_spectrum(ragged)
    with pytest.raises(SpectrumFileError, match="cannot read"):
        read_spectrum(tmp_path / "missing.xdi")
