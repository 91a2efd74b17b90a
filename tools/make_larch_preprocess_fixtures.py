"""Store xraylarch's preprocessing of the packaged spectra as test fixtures (tests/fixtures/larch_preprocess/).

xraylarch is the field's reference implementation but only an optional extra of this project, so the tests
compare the engine against these stored outputs when larch is not installed. Re-run after changing the
spectra or the reference parameters:

    python tools/make_larch_preprocess_fixtures.py

Per spectrum ``<name>.npz``: larch ``pre_edge`` (default parameters: e0, edge_step, norm and the ranges it
chose), ``autobk`` (rbkg=1, kweight=2), ``xftf`` (kmin=3, kmax=14, dk=1, kweight=2, hanning) and
``estimate_noise`` (kmax = end of data). ``variants.npz``: larch E0 and edge step of noisy / truncated
copies of every spectrum (fixed seed), so that tests cover more than the five files themselves.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "larch_preprocess"
AUTOBK = {"rbkg": 1.0, "kweight": 2}
XFTF = {"kmin": 3.0, "kmax": 14.0, "dk": 1.0, "kweight": 2, "window": "hanning"}
N_VARIANTS = 12


def variant_arrays(energy: np.ndarray, mu: np.ndarray, rng: np.random.Generator, n: int):
    """Noisy, truncated copies of one spectrum: (lo, hi, noise_sigma, mu_noisy) tuples."""
    out = []
    for _ in range(n):
        lo = int(rng.integers(0, 40))
        hi = energy.size - int(rng.integers(0, energy.size // 3))
        sigma = float(rng.uniform(0.0, 0.005)) * float(np.ptp(mu))
        out.append((lo, hi, sigma, mu + rng.normal(0.0, sigma, mu.size) if sigma > 0 else mu.copy()))
    return out


def main() -> int:
    warnings.simplefilter("ignore")
    import larch
    from larch import Group
    from larch.xafs import autobk, estimate_noise, pre_edge, xftf

    sys.path.insert(0, str(ROOT))
    from xafs_stream.data import SPECTRA_DIR
    from xafs_stream.io import read_spectrum

    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"larch_version": larch.__version__, "autobk": AUTOBK, "xftf": XFTF, "spectra": []}
    rng = np.random.default_rng(20261125)
    var = {"name": [], "lo": [], "hi": [], "sigma": [], "mu": [], "e0": [], "edge_step": []}
    for path in sorted(SPECTRA_DIR.iterdir()):
        spec = read_spectrum(path)
        g = Group(energy=spec.energy, mu=spec.mu)
        pre_edge(g)
        autobk(g, **AUTOBK)
        xftf(g, **XFTF)
        estimate_noise(g.k, g.chi, group=g, kmax=float(g.k[-1]))
        d = g.pre_edge_details
        np.savez_compressed(
            OUT / f"{path.stem}.npz",
            energy=spec.energy,
            mu=spec.mu,
            e0=g.e0,
            edge_step=g.edge_step,
            norm=g.norm,
            flat=g.flat,
            pre1=d.pre1,
            pre2=d.pre2,
            norm1=d.norm1,
            norm2=d.norm2,
            nnorm=d.nnorm,
            k=g.k,
            chi=g.chi,
            bkg=g.bkg,
            r=g.r,
            chir_mag=g.chir_mag,
            chir_re=g.chir_re,
            chir_im=g.chir_im,
            epsilon_k=g.epsilon_k,
            kmax_suggest=g.kmax_suggest,
        )
        meta["spectra"].append(path.name)
        for lo, hi, sigma, mu in variant_arrays(spec.energy, spec.mu, rng, N_VARIANTS):
            gv = Group(energy=spec.energy[lo:hi], mu=mu[lo:hi])
            pre_edge(gv)
            var["name"].append(path.name)
            var["lo"].append(lo)
            var["hi"].append(hi)
            var["sigma"].append(sigma)
            var["mu"].append(mu)
            var["e0"].append(gv.e0)
            var["edge_step"].append(gv.edge_step)
        print(f"{path.name}: e0 {g.e0:.3f} eV, step {g.edge_step:.4f}")
    mu_len = max(len(m) for m in var["mu"])
    mu_pad = np.full((len(var["mu"]), mu_len), np.nan)
    for i, m in enumerate(var["mu"]):
        mu_pad[i, : len(m)] = m
    np.savez_compressed(
        OUT / "variants.npz",
        name=np.array(var["name"]),
        lo=np.array(var["lo"]),
        hi=np.array(var["hi"]),
        sigma=np.array(var["sigma"]),
        mu=mu_pad,
        e0=np.array(var["e0"]),
        edge_step=np.array(var["edge_step"]),
    )
    (OUT / "README.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
