"""Stack readers: NPZ / HDF5 / TIFF / STXM round trips and clear errors."""

from pathlib import Path

import numpy as np
import pytest

from xafs_stream.engines.errors import InputError
from xafs_stream.io.stack import parse_stxm_header, read_reference_spectra, read_stack

DATA = Path(__file__).parent / "data" / "stxm_fe_L.npz"
SHARED = Path("/work/shared/data/stack_stxm_fe_L")


def _stack(n_e=12, ny=5, nx=7, seed=0):
    rng = np.random.default_rng(seed)
    return np.linspace(7100, 7150, n_e), rng.uniform(0.5, 2.0, (n_e, ny, nx))


def test_npz_absorption_and_intensity_round_trip(tmp_path):
    e, od = _stack()
    np.savez(tmp_path / "a.npz", energy=e, stack=od, ref_x=np.ones(e.size))
    s = read_stack(tmp_path / "a.npz")
    np.testing.assert_allclose(s.stack, od)
    assert list(s.refs) == ["x"] and s.shape == (5, 7)
    i0 = np.full(e.size, 1000.0)
    np.savez(tmp_path / "i.npz", energy=e, stack=i0[:, None, None] * np.exp(-od), i0=i0)
    np.testing.assert_allclose(read_stack(tmp_path / "i.npz").stack, od, atol=1e-12)


def test_hdf5_and_tiff(tmp_path):
    import h5py
    import tifffile

    e, od = _stack()
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["exchange/data"] = od
        h5["exchange/energy"] = e
    np.testing.assert_allclose(read_stack(tmp_path / "s.h5").stack, od)
    tifffile.imwrite(tmp_path / "s.tif", od.astype(np.float32))
    with pytest.raises(InputError, match="carry no energies"):
        read_stack(tmp_path / "s.tif")
    np.savetxt(tmp_path / "s.energies.txt", e)
    s = read_stack(tmp_path / "s.tif")
    np.testing.assert_allclose(s.energy, e)
    np.testing.assert_allclose(s.stack, od.astype(np.float32))


def test_nonpositive_intensity_becomes_nan(tmp_path):
    e, od = _stack()
    inten = 100 * np.exp(-od)
    inten[:, 0, 0] = 0.0
    np.savez(tmp_path / "z.npz", energy=e, stack=inten, i0=np.full(e.size, 100.0))
    s = read_stack(tmp_path / "z.npz")
    assert np.isnan(s.stack[:, 0, 0]).all() and s.metadata["n_nonpositive"] == e.size


def test_errors_name_the_problem(tmp_path):
    e, od = _stack()
    np.savez(tmp_path / "bad.npz", energy=e[:-1], stack=od)
    with pytest.raises(InputError, match="11 energies but the stack has 12 images"):
        read_stack(tmp_path / "bad.npz")
    np.savez(tmp_path / "int.npz", energy=e, stack=od, stack_kind=np.array("intensity"))
    with pytest.raises(InputError, match="give the incident intensity"):
        read_stack(tmp_path / "int.npz")
    np.savez(tmp_path / "dec.npz", energy=e[::-1], stack=od)
    with pytest.raises(InputError, match="strictly increasing"):
        read_stack(tmp_path / "dec.npz")
    (tmp_path / "x.dat").write_text("1 2\n")
    with pytest.raises(InputError, match="unknown format"):
        read_stack(tmp_path / "x.dat")
    with pytest.raises(FileNotFoundError):
        read_stack(tmp_path / "missing.npz")


def test_reference_outside_the_stack_range(tmp_path):
    p = tmp_path / "ref.txt"
    np.savetxt(p, np.column_stack([np.linspace(7110, 7200, 50), np.ones(50)]))
    with pytest.raises(InputError, match="reference ref.txt: covers 7110.00-7200.00 eV"):
        read_reference_spectra([p], np.linspace(7100, 7150, 20))
    names, refs = read_reference_spectra([p], np.linspace(7120, 7150, 20))
    assert names == ["ref"] and refs.shape == (1, 20)


def test_packaged_stxm_stack():
    s = read_stack(DATA)
    assert s.stack.shape == (123, 125, 125)
    assert s.energy[0] == pytest.approx(700.0) and s.energy[-1] == pytest.approx(730.353)
    assert s.pixel_size_um == pytest.approx(0.08)
    assert "Toner" in s.metadata["attribution"]
    assert np.isfinite(s.stack).all() and 0.5 < np.median(s.stack) < 1.5  # optical density


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs the shared data folder")
def test_stxm_hdr_reader_matches_the_packaged_npz():
    hdr = parse_stxm_header(SHARED / "71214078.hdr")
    assert hdr["energy"].size == 123 and hdr["x_um"].size == 125
    s = read_stack(SHARED / "71214078.hdr", i0=SHARED / "i0.xsp")
    np.testing.assert_allclose(s.stack, read_stack(DATA).stack, atol=1e-6)
    with pytest.raises(InputError, match="transmitted intensities"):
        read_stack(SHARED / "71214078.hdr")
