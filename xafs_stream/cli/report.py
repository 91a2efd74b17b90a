"""``xafs-stream report RUN``: one self-contained HTML report (figures inline) of a run's data, parameters and
results; ``--png`` writes the figures as separate PNG files beside it instead.

RUN is a uid, a unique uid prefix or -1 for the latest run.
"""

from __future__ import annotations

import argparse

from .common import add_service_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report of a run", description=__doc__)
    p.add_argument("run_ref", metavar="RUN", help="run uid, unique uid prefix, or -1 for the latest run")
    p.add_argument("-o", "--output", default=".", help="output directory (default: current directory)")
    p.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--png", action="store_true", help="write the figures as PNG files beside the HTML")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    add_service_options(p, broker=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..client.catalog import fetch_run
    from ..client.report import write_report
    from .query import open_catalog

    tiled = open_catalog(args)
    try:
        data = fetch_run(tiled.client, args.run_ref)
        page = write_report(data, args.output, inline=not args.png, overwrite=args.overwrite)
    finally:
        tiled.close()
    print(page)
    return 0
