"""FEFF path files → arrays, and the EXAFS equation against xraylarch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xafs_stream.data import FEFF_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.engines.spm import path_chi, path_chi_grid
from xafs_stream.io.feff import (
    FeffFileError,
    feff_inp_for_cluster,
    generate_feff_paths,
    read_feff_dat,
    read_feff_dir,
    read_files_dat,
    read_paths_dat,
    resolve_path_set,
)

FIX = Path(__file__).parent / "fixtures" / "feffit"
CU = FEFF_DIR / "cu_fcc_a3.615_feff6l"
FE = FEFF_DIR / "fe_bcc_a2.8665_feff6l"


def test_read_feff_dat_cu_first_path():
    p = read_feff_dat(CU / "feff0001.dat")
    assert p.nleg == 2 and p.degeneracy == 12.0
    assert p.reff == pytest.approx(2.5562)
    assert p.rnorman == pytest.approx(2.6384)
    assert [a.symbol for a in p.atoms] == ["Cu", "Cu"] and [a.z for a in p.atoms] == [29, 29]
    assert p.pair == "Cu-Cu" and p.is_single_scattering
    assert p.reduced_mass == pytest.approx(63.546 / 2, rel=1e-4)
    # the row "0.200  3.5118E+00  6.7506E-02 -6.1226E+00  0.9870E+00  1.5646E+01  1.8085E+00" of the file
    i = int(np.argmin(np.abs(p.k - 0.2)))
    assert p.amp[i] == pytest.approx(6.7506e-02 * 0.9870)
    assert p.phase[i] == pytest.approx(3.5118 - 6.1226)
    assert p.lam[i] == pytest.approx(15.646) and p.rep[i] == pytest.approx(1.8085)
    assert p.red_factor[i] == pytest.approx(0.9870) and p.mag_feff[i] == pytest.approx(6.7506e-02)
    assert p.k[0] == 0.0 and p.k[-1] == 20.0


@pytest.mark.parametrize(
    "folder, n_paths, ss_reff",
    [
        (CU, 14, [2.5562, 3.6150, 4.4275, 5.1124]),  # fcc a = 3.615 Å shells (data README)
        (FE, 19, [2.4825, 2.8665, 4.0538, 4.7536, 4.9649]),  # bcc a = 2.8665 Å: a√3/2, a, a√2, a√11/2, a√3
    ],
)
def test_read_feff_dir(folder, n_paths, ss_reff):
    pset = read_feff_dir(folder)
    assert len(pset.paths) == n_paths
    assert [p.reff for p in pset.single_scattering()] == pytest.approx(ss_reff, abs=1e-4)
    assert len(pset.files) == n_paths
    assert [r["reff"] for r in pset.files] == pytest.approx([p.reff for p in pset.paths])
    listed = read_paths_dat(folder / "paths.dat")
    assert [row["nleg"] for row in listed[:2]] == [2, 2]
    assert listed[0]["reff"] == pytest.approx(ss_reff[0])


def test_packaged_name_and_errors(tmp_path):
    assert resolve_path_set("packaged:cu_fcc_a3.615_feff6l") == CU
    with pytest.raises(FeffFileError, match="no packaged path set 'nope'"):
        resolve_path_set("packaged:nope")
    with pytest.raises(FeffFileError, match="not a directory"):
        read_feff_dir(tmp_path / "missing")
    with pytest.raises(FeffFileError, match="no FEFF path files"):
        read_feff_dir(tmp_path)
    bad = tmp_path / "feff0001.dat"
    bad.write_text("just some text\n1 2 3\n")
    with pytest.raises(FeffFileError, match="not a feffNNNN.dat file"):
        read_feff_dat(bad)
    assert issubclass(FeffFileError, InputError)
    assert read_files_dat(CU / "files.dat")[0]["file"] == "feff0001.dat"


@pytest.mark.larch
def test_path_chi_matches_xraylarch():
    """χ(k) of a path equals xraylarch's path2chi (live when installed, else the stored arrays)."""
    ref = json.loads((FIX / "feffit_reference.json").read_text())["path_chi"]
    k = np.asarray(ref["k"])
    path = read_feff_dat(FEFF_DIR / ref["file"])
    try:
        import larch  # noqa: F401
        from larch.xafs import feffpath, path2chi
    except ImportError:
        expected = [np.asarray(c["chi"]) for c in ref["cases"]]
    else:
        expected = []
        for c in ref["cases"]:
            p = c["params"]
            lp = feffpath(
                str(FEFF_DIR / ref["file"]),
                degen=p["n"],
                s02=p["s02"],
                e0=p["de0"],
                sigma2=p["sigma2"],
                deltar=p["r"] - path.reff,
            )
            path2chi(lp, k=k)
            expected.append(np.asarray(lp.chi))
    for c, exp in zip(ref["cases"], expected, strict=True):
        mine = path_chi(path, k, **c["params"])
        # xraylarch overwrites its first point by linear extrapolation; compare from the second on
        assert np.max(np.abs(mine[1:] - exp[1:])) < 1e-6 * np.max(np.abs(exp))


def test_path_chi_grid_is_path_chi_per_column():
    p = read_feff_dat(CU / "feff0001.dat")
    k = np.arange(3.0, 14.0, 0.05)
    r = np.array([2.40, 2.55, 2.71])
    s2 = np.array([0.002, 0.009])
    grid = path_chi_grid(p, k, r, s2, de0=1.5)
    for i, rr in enumerate(r):
        for j, ss in enumerate(s2):
            assert np.allclose(grid[:, i, j], path_chi(p, k, n=1.0, r=rr, sigma2=ss, de0=1.5), atol=1e-14)


def test_exafs_equation_basic_physics():
    """N scales χ linearly; σ² damps as exp(-2k²σ²) at high k; R sets the oscillation frequency 2R."""
    p = read_feff_dat(CU / "feff0001.dat")
    k = np.arange(3.0, 16.0, 0.01)
    a = path_chi(p, k, n=12, r=2.556, sigma2=0.0)
    assert np.allclose(path_chi(p, k, n=6, r=2.556, sigma2=0.0), a / 2)
    b = path_chi(p, k, n=12, r=2.556, sigma2=0.01)
    # around k = 15 the disordered signal is the ordered one damped by exp(-2k²σ²) (Debye-Waller factor),
    # compared as RMS over about one period (the σ² phase term moves the zeros, not the envelope)
    hi = (k > 14.4) & (k < 15.6)
    expected = np.sqrt(np.mean((a[hi] * np.exp(-2 * k[hi] ** 2 * 0.01)) ** 2) / np.mean(a[hi] ** 2))
    ratio = np.sqrt(np.mean(b[hi] ** 2) / np.mean(a[hi] ** 2))
    assert ratio == pytest.approx(expected, rel=0.05)
    # moving the neighbours out by 0.3 Å moves the oscillation frequency by 2·0.3 rad·Å (the FEFF phase
    # slope shifts both peaks alike, by about -0.4 Å in R, the familiar |χ(R)| offset)
    nfft = 2**16
    freq = np.fft.rfftfreq(nfft, d=0.01) * 2 * np.pi  # rad·Å

    def peak(chi):
        return freq[np.argmax(np.abs(np.fft.rfft(chi * np.hanning(len(k)), n=nfft)))]

    far = path_chi(p, k, n=12, r=2.856, sigma2=0.0)
    assert peak(far) - peak(a) == pytest.approx(0.6, abs=0.03)
    assert 2 * 2.556 - 1.2 < peak(a) < 2 * 2.556


def test_feff_inp_for_cluster():
    text = feff_inp_for_cluster(
        [("Zn", 0, 0, 0), ("Se", 1.41717, 1.41717, 1.41717), ("Zn", 2.83435, 2.83435, 0)],
        title="ZnSe",
        rmax=4.5,
    )
    assert "   0 30 Zn" in text and "   1 34 Se" in text and "   2 30 Zn" in text
    assert "2.45461" in text  # Zn-Se = a√3/4 for a = 5.6687 Å
    with pytest.raises(InputError, match="unknown element"):
        feff_inp_for_cluster([("Zn", 0, 0, 0), ("Qq", 1, 1, 1)])


@pytest.mark.larch
def test_generate_paths_with_feff6l(tmp_path):
    """FEFF6L of a rocksalt FeO cluster (a = 4.307 Å): single-scattering Fe-O at a/2 and Fe-Fe at a/√2."""
    pytest.importorskip("larch")
    import itertools

    a = 4.307
    atoms = [("Fe", 0.0, 0.0, 0.0)]
    for i, j, k in itertools.product(range(-2, 3), repeat=3):
        if (i, j, k) != (0, 0, 0) and i * i + j * j + k * k <= 4:
            atoms.append(("O" if (i + j + k) % 2 else "Fe", i * a / 2, j * a / 2, k * a / 2))
    pset = generate_feff_paths(feff_inp_for_cluster(atoms, title="FeO", rmax=3.5, nleg=2), tmp_path / "feo")
    ss = pset.single_scattering()
    assert (ss[0].pair, ss[1].pair) == ("Fe-O", "Fe-Fe")
    assert ss[0].reff == pytest.approx(a / 2, abs=1e-3)
    assert ss[1].reff == pytest.approx(a / np.sqrt(2), abs=1e-3)
    assert ss[0].degeneracy == 6 and ss[1].degeneracy == 12
    with pytest.raises(InputError, match="ATOMS"):
        generate_feff_paths("TITLE nothing here", tmp_path / "bad")


def test_a_path_set_is_recognised_by_content_whatever_the_file_names(tmp_path):
    """larch writes feff_<label>NN.dat files and no files.dat; a copied set may have a stale files.dat."""
    import shutil

    folder = tmp_path / "feo_larch"
    folder.mkdir()
    ref = read_feff_dir(CU)
    for i, name in enumerate(p.name for p in sorted(CU.glob("feff0*.dat"))):
        shutil.copy(CU / name, folder / f"feff_cu{i + 1:02d}.dat")
    (folder / "notes.dat").write_text("# not a path\n1 2 3\n")
    got = read_feff_dir(folder)
    assert [p.reff for p in got.paths] == [p.reff for p in ref.paths]
    assert [p.degeneracy for p in got.paths] == [p.degeneracy for p in ref.paths]
    (folder / "files.dat").write_text((CU / "files.dat").read_text())  # names that are not here
    assert len(read_feff_dir(folder).paths) == len(ref.paths)
