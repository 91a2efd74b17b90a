"""Simulated XAFS beamline built with ophyd (installed as ``xafs_stream.simulated_devices``).

``make_beamline()`` returns a :class:`~.beamline.SimBeamline` with ``scaler`` (I0/It/If counts), ``dcm``
(the monochromator, energy in eV), ``stage`` (the map's x/y stage), ``mapdet`` (the μ-XANES area detector)
and ``phantom`` (the map sample)::

    from xafs_stream.simulated_devices import make_beamline
    bl = make_beamline(sample="Cu")
"""

from __future__ import annotations

__all__ = ["SimBeamline", "make_beamline"]


def __getattr__(name: str):
    # lazy: importing the package (e.g. for the phantom) must not import ophyd
    if name in __all__:
        from . import beamline

        return getattr(beamline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
