"""File formats: XDI and plain column spectrum files."""

from .spectrum_file import SpectrumFile, read_spectrum, write_xdi

__all__ = ["SpectrumFile", "read_spectrum", "write_xdi"]
