"""Convert the ALS STXM Fe L-edge stack (``.hdr`` + ``.xim``) into one compressed NPZ for the tests.

Input folder (default ``/work/shared/data/stack_stxm_fe_L``): ``71214078.hdr``, ``71214078_a000.xim`` ...,
``i0.xsp`` (incident intensity), ``reduced.r`` / ``oxidized.r`` (region spectra, optical density) and
``mask_file.msk`` (125 x 125 characters, ``O`` = selected).

Output (default ``tests/data/stxm_fe_L.npz``), readable by :func:`xafs_stream.io.stack.read_stack`:
``energy`` (n_e,) eV float64, ``stack`` (n_e, ny, nx) transmitted intensity float32, ``i0`` (n_e,),
``stack_kind`` "intensity", ``ref_reduced`` / ``ref_oxidized`` (n_e,) OD, ``mask`` (ny, nx) bool,
``pixel_size_um`` and ``metadata`` (JSON: attribution and source).

Run: ``python tools/convert_stxm_stack.py [SOURCE_DIR] [OUT.npz]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from xafs_stream.io import read_spectrum
from xafs_stream.io.stack import read_stxm_intensity

ATTRIBUTION = (
    "STXM stack courtesy of B. Toner and M. Marcus (ALS 11.0.2.2; Breier et al. 2012), "
    "via stetef/nano-XANES-microscopy-of-Fe, MIT (c) 2022 stetef"
)
DEFAULT_SOURCE = Path("/work/shared/data/stack_stxm_fe_L")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "stxm_fe_L.npz"


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A character mask (one text row per image row, 'O' = selected), padded to ``shape``."""
    rows = path.read_text().splitlines()
    if len(rows) != shape[0]:
        raise ValueError(f"{path.name}: {len(rows)} rows, expected {shape[0]}")
    return np.array([[c == "O" for c in row.ljust(shape[1])[: shape[1]]] for row in rows], dtype=bool)


def convert(source: Path, out: Path) -> Path:
    headers = sorted(source.glob("*.hdr"))
    if len(headers) != 1:
        raise SystemExit(f"expected one .hdr file in {source}, found {[h.name for h in headers]}")
    header, intensity = read_stxm_intensity(headers[0])
    energy = header["energy"]
    refs = {}
    for name in ("reduced", "oxidized"):
        spec = read_spectrum(source / f"{name}.r")
        if spec.energy.shape != energy.shape or not np.allclose(spec.energy, energy, atol=1e-3):
            raise SystemExit(f"{name}.r is not on the stack energies")
        refs[f"ref_{name}"] = spec.mu.astype(np.float64)
    i0 = read_spectrum(source / "i0.xsp")
    if not np.allclose(i0.energy, energy, atol=1e-3):
        raise SystemExit("i0.xsp is not on the stack energies")
    mask = read_mask(source / "mask_file.msk", intensity.shape[1:])
    metadata = {
        "attribution": ATTRIBUTION,
        "source": f"{headers[0].name} + {intensity.shape[0]} .xim images, i0.xsp, reduced.r, oxidized.r, "
        "mask_file.msk",
        "edge": "Fe L2,3",
        "beamline": "ALS 11.0.2.2 STXM",
        "l3_peak_ev": {"Fe2+": 708.25, "Fe3+": 709.67},
    }
    pixel = float(np.median(np.diff(header["x_um"]))) if header["x_um"] is not None else float("nan")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        energy=energy,
        stack=intensity.astype(np.float32),
        i0=i0.mu.astype(np.float64),
        stack_kind=np.array("intensity"),
        mask=mask,
        pixel_size_um=np.array(pixel),
        metadata=np.array(json.dumps(metadata)),
        **refs,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    out = convert(args.source, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
