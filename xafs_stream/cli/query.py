"""``xafs-stream query``: find runs by sample, element, edge, mode, date and result values.

Examples::

    xafs-stream query --sample Cu --since 7d
    xafs-stream query --element Fe --where "spm.shell1.N>6" --where "status.spm==ok" --json
    xafs-stream query --where "bayes.K==2" --columns bayes.preedge_centroid
    xafs-stream query --fields            # list the fields --where accepts
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import add_service_options, config_from_args

DEFAULT_COLUMNS = ("uid", "start", "scan", "sample", "element", "edge", "kind", "exit", "status")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="find runs by metadata and by analysis results",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", help="sample name (wildcards * ? allowed, then case-insensitive)")
    p.add_argument("--element", help="absorbing element, e.g. Cu")
    p.add_argument("--edge", help="absorption edge, e.g. K")
    p.add_argument("--mode", help="transmission or fluorescence")
    p.add_argument("--kind", help="spectrum or map")
    p.add_argument("--since", help="runs started at or after: 2026-11-20, 2026-11-20T08:00, or an age (3d, 12h)")
    p.add_argument("--until", help="runs started at or before (a date alone includes that day)")
    p.add_argument("--where", action="append", default=[], metavar="COND",
                   help="result condition FIELD OP VALUE, e.g. 'spm.shell1.N>10', 'bayes.K==2', "
                        "'status.spm==ok' (repeat to AND; see --fields)")
    p.add_argument("--limit", type=int, help="only the newest N runs")
    p.add_argument("--columns", help="extra comma-separated fields to show, e.g. e0,spm.shell1.R")
    p.add_argument("--json", action="store_true", help="print the runs with their results as JSON")
    p.add_argument("--fields", action="store_true", help="list the fields --where accepts and exit")
    add_service_options(p, broker=False)
    p.set_defaults(func=run)


def open_catalog(args: argparse.Namespace) -> Any:
    """The Tiled handle for ``--tiled-uri``/``--config``/``--data-dir`` (close it when done).

    Read-only commands never create an empty embedded catalog: without a Tiled URI the data directory must
    already hold one. An unreachable server is a one-line error, not a traceback.
    """
    from ..service import open_tiled
    from .errors import CliError

    cfg = config_from_args(args)
    if not cfg.tiled.uri and not (cfg.data_dir / "tiled" / "catalog.db").exists():
        raise CliError(f"no Tiled catalog in {cfg.data_dir} (give --tiled-uri, or --data-dir/--config of a "
                       f"running or stopped service)")
    try:
        return open_tiled(cfg, role=getattr(args, "command", None) or "read")
    except ConnectionError as exc:
        raise CliError(str(exc)) from None


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def format_table(runs: list, extra: list[str]) -> str:
    """A plain-text table of :class:`~xafs_stream.client.catalog.RunSummary` rows."""
    header = list(DEFAULT_COLUMNS) + extra
    rows = []
    for r in runs:
        status = " ".join(f"{k}:{v}" for k, v in sorted(r.status.items()))
        row = [r.uid[:8], r.start_iso[:19].replace("T", " "), _cell(r.scan_id), r.sample, r.element, r.edge,
               r.xafs_kind, r.exit_status or "running", status]
        row += [_cell(r.get(name)) for name in extra]
        rows.append(row)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    from ..client.catalog import describe_fields, find_runs, lookup_field, parse_where
    from ..core import to_json_safe

    if args.fields:
        print(describe_fields())
        return 0
    conditions = parse_where(args.where)  # bad conditions fail here, before Tiled is reached
    extra = [c.key for c in conditions]
    for name in (args.columns or "").split(","):
        name = name.strip()
        if name and name not in extra:
            lookup_field(name)
            extra.append(name)
    tiled = open_catalog(args)
    try:
        runs = find_runs(tiled.client, sample=args.sample, element=args.element, edge=args.edge, mode=args.mode,
                         kind=args.kind, since=args.since, until=args.until, where=conditions, limit=args.limit)
    finally:
        tiled.close()
    if args.json:
        json.dump(to_json_safe([r.to_dict() for r in runs]), sys.stdout, indent=1)
        print()
    else:
        print(format_table(runs, [e for e in extra if e != "time"]))
        print(f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
    return 0
