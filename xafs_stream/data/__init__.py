"""Packaged reference data: real spectra, XANES standards and FEFF paths (see README.md here)."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SPECTRA_DIR = DATA_DIR / "spectra"
XANES_REFS_DIR = DATA_DIR / "xanes_refs"
FEFF_DIR = DATA_DIR / "feff"


def spectrum_path(name: str) -> Path:
    """Path of a packaged spectrum file, e.g. ``spectrum_path("cu_metal_rt.xdi")``."""
    path = SPECTRA_DIR / name
    if not path.is_file():
        known = sorted(p.name for p in SPECTRA_DIR.iterdir() if p.is_file())
        raise FileNotFoundError(f"no packaged spectrum {name!r}; known: {known}")
    return path
