"""Any measured spectrum as a simulated sample: ``make_beamline(sample="path/to/file.xdi")`` scans it."""

from __future__ import annotations

import numpy as np
import pytest

from xafs_stream.data import SPECTRA_DIR
from xafs_stream.engines.xafs import process_spectrum
from xafs_stream.io import read_spectrum


def test_a_file_in_the_beam_gives_back_its_own_spectrum(RE):
    pytest.importorskip("ophyd")
    from xafs_stream.plans import xafs_scan
    from xafs_stream.simulated_devices import make_beamline
    from xafs_stream.simulated_devices.samples import SampleModel

    path = SPECTRA_DIR / "feo_rt1.xdi"  # names its element (XDI): Fe K
    bl = make_beamline(sample=str(path))
    docs = []
    RE(xafs_scan([bl.scaler], bl.dcm, element="Fe", sample="FeO from file", repeats=1), lambda n, d: docs.append((n, d)))
    events = [d for n, d in docs if n == "event"]
    energy = np.array([e["data"]["dcm"] for e in events])
    mu = np.log(np.array([e["data"]["scaler_i0"] for e in events]) / np.array([e["data"]["scaler_it"] for e in events]))
    ref = read_spectrum(path)
    assert process_spectrum(energy, mu).e0 == pytest.approx(process_spectrum(ref.energy, ref.mu).e0, abs=1.0)
    with pytest.raises(ValueError, match="does not name its element"):
        make_beamline(sample=str(SPECTRA_DIR / "fe2o3_rt1.xmu"))
    model = SampleModel.from_file(SPECTRA_DIR / "fe2o3_rt1.xmu", "Fe", "K")
    assert make_beamline(sample=model).sample_name == "fe2o3_rt1.xmu"


def test_one_column_of_a_reference_library_as_a_sample():
    """``mu_column`` picks one spectrum of a multi-column file (FeLib): the sample follows that column's
    normalised μ (edge step 1 on a 0.3 pre-edge), not its neighbour's."""
    from xafs_stream.data import XANES_REFS_DIR
    from xafs_stream.simulated_devices.samples import SampleModel

    path = XANES_REFS_DIR / "FeLibNov2021.nor"
    lib = {c: read_spectrum(path, mu_column=c) for c in ("Magnetite", "Goethite")}
    models = {c: SampleModel.from_file(path, "Fe", "K", mu_column=c) for c in lib}
    assert models["Magnetite"].name.endswith(":Magnetite")
    e = lib["Magnetite"].energy[(lib["Magnetite"].energy > 7105) & (lib["Magnetite"].energy < 7160)]
    for c, model in models.items():
        mine = np.interp(e, lib[c].energy, lib[c].mu)
        other = np.interp(e, lib["Goethite" if c == "Magnetite" else "Magnetite"].energy,
                          lib["Goethite" if c == "Magnetite" else "Magnetite"].mu)
        got = model.mu_t(e) - 0.3  # the model's pre-edge level
        assert np.abs(got - mine).max() < 0.05 < np.abs(got - other).max()
        assert np.corrcoef(got, mine)[0, 1] > 0.999
