"""``xafs-stream queue-profile DIR --config xafs-stream.toml``: a bluesky-queueserver startup profile.

Writes ``DIR/00-xafs-stream.py`` (the startup code: a RunEngine subscribed to the running service with the
same configuration, the simulated beamline's devices ``scaler``, ``dcm``, ``stage``, ``mapdet``, and the plans
``xafs_scan``, ``xafs_scan_until``, ``xafs_scan_adaptive``, ``mu_xafs_map``) and ``DIR/user_group_permissions.yaml``. Start the
queue with ``start-re-manager --startup-dir DIR --user-group-permissions DIR/user_group_permissions.yaml``
(see the README, "Running from the queue"). At a real beamline, replace the devices in the startup file by
the beamline's own (the plans take any ophyd detectors and monochromator).
"""

from __future__ import annotations

import argparse
from pathlib import Path

STARTUP = '''"""xafs-stream startup for bluesky-queueserver (written by `xafs-stream queue-profile`)."""

from bluesky import RunEngine

from xafs_stream import plans as _plans
from xafs_stream import subscribe
from xafs_stream.simulated_devices import make_beamline

CONFIG = {config!r}

RE = RunEngine()
_beamline = make_beamline(sample={sample!r})
scaler, dcm, stage, mapdet = _beamline.scaler, _beamline.dcm, _beamline.stage, _beamline.mapdet
_session = subscribe(RE, CONFIG)  # raw runs -> the service's Tiled, spectra and tiles -> its broker


# The queue's plans. Thin wrappers without annotations: the queueserver builds its parameter models from
# the annotations, and the plans' postponed ones ("list | None", "Any") are strings it cannot resolve.
def xafs_scan(detectors, mono, regions=None, **kwargs):
    yield from _plans.xafs_scan(detectors, mono, regions, **kwargs)


def xafs_scan_until(detectors, mono, regions=None, **kwargs):
    yield from _plans.xafs_scan_until(detectors, mono, regions, **kwargs)


def xafs_scan_adaptive(detectors, mono, **kwargs):
    yield from _plans.xafs_scan_adaptive(detectors, mono, **kwargs)


def mu_xafs_map(detector, mono, stage, energies, **kwargs):
    yield from _plans.mu_xafs_map(detector, mono, stage, energies, **kwargs)


xafs_scan.__doc__ = _plans.xafs_scan.__doc__
xafs_scan_until.__doc__ = _plans.xafs_scan_until.__doc__
xafs_scan_adaptive.__doc__ = _plans.xafs_scan_adaptive.__doc__
mu_xafs_map.__doc__ = _plans.mu_xafs_map.__doc__
'''


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("queue-profile", help="write a bluesky-queueserver startup profile",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", help="profile directory to write (created)")
    p.add_argument("--config", required=True, help="the service's xafs-stream.toml (the same file as serve's)")
    p.add_argument("--sample", default="Cu", help="simulated sample in the beam (default Cu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing profile")
    p.set_defaults(func=run)


def write_profile(directory: str | Path, config: str | Path, *, sample: str = "Cu",
                  overwrite: bool = False) -> Path:
    """Write the profile; returns its directory."""
    from importlib.resources import files

    from .errors import CliError

    out = Path(directory)
    startup = out / "00-xafs-stream.py"
    if startup.exists() and not overwrite:
        raise CliError(f"{startup} exists (use --overwrite)")
    cfg = Path(config).resolve()
    if not cfg.is_file():
        raise CliError(f"{config}: no such configuration file")
    out.mkdir(parents=True, exist_ok=True)
    startup.write_text(STARTUP.format(config=str(cfg), sample=sample))
    perms = files("xafs_stream.data").joinpath("queueserver", "user_group_permissions.yaml").read_text()
    (out / "user_group_permissions.yaml").write_text(perms)
    return out


def run(args: argparse.Namespace) -> int:
    out = write_profile(args.directory, args.config, sample=args.sample, overwrite=args.overwrite)
    print(f"profile: {out}")
    print(f"start the queue: start-re-manager --startup-dir {out} "
          f"--user-group-permissions {out / 'user_group_permissions.yaml'}")
    return 0
