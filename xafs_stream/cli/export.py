"""``xafs-stream export RUN``: write a run's data and results as XDI (spectra), HDF5 (maps) or CSV (events).

RUN is a uid, a unique uid prefix or -1 for the latest run. XDI writes one file per repeat plus the merged
spectrum when it has been analysed (``--repeat N`` or ``--repeat merge`` for just one); see
:mod:`xafs_stream.client.export` for the file layouts.
"""

from __future__ import annotations

import argparse

from .common import add_service_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run as XDI, HDF5 or CSV", description=__doc__)
    p.add_argument("run_ref", metavar="RUN", help="run uid, unique uid prefix, or -1 for the latest run")
    p.add_argument("--format", dest="fmt", choices=("xdi", "hdf5", "csv"),
                   help="file format (default: xdi for spectra, hdf5 for maps)")
    p.add_argument("-o", "--output", default=".", help="output directory (default: current directory)")
    p.add_argument("--repeat", default="all", help="XDI: all (default), merge, or a repeat number")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    add_service_options(p, broker=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client.catalog import fetch_run
    from ..client.export import export_run, parse_repeat
    from .query import open_catalog

    repeat = parse_repeat(args.repeat)
    tiled = open_catalog(args)
    try:
        data = fetch_run(tiled.client, args.run_ref)
        paths = export_run(data, args.output, fmt=args.fmt, repeat=repeat, overwrite=args.overwrite)
    finally:
        tiled.close()
    for path in paths:
        print(path)
    return 0
