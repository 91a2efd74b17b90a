"""``xafs-stream watch``: print each analysis result the moment it is stored (live feedback in a terminal).

Examples::

    xafs-stream watch                                  # every result of every run ([broker] events)
    xafs-stream watch --run 3f2a... --analysis xafs.normalize
    xafs-stream watch --events tcp://broker-host:5562 --json   # one JSON object per line, for scripts

Each line: time, run, analysis, unit, status, the result's summary numbers (or the error) and its verdict
(``quality: ok|warn|bad (reasons)``). The events
come from the broker (best effort: results stored while nobody watched are in Tiled, see ``query``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from ..engines.verdict import quality_line
from .common import add_service_options, config_from_args, strict_json
from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="print analysis results as they are stored (live)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="only this run (uid)")
    p.add_argument("--analysis", help="only this analysis, e.g. xafs.normalize")
    p.add_argument("--json", action="store_true", help="one JSON object per result and line")
    p.add_argument("--count", type=int, help="stop after N results")
    p.add_argument("--timeout", type=float, help="stop after this many seconds without a result")
    p.add_argument("--fields", type=int, default=4, help="summary numbers shown per line (default 4)")
    add_service_options(p)
    p.set_defaults(func=run)


def format_event(event: Any, n_fields: int = 4) -> str:
    """One line for a result event: ``12:00:01 3f2a1b2c xafs.normalize repeat_0 ok e0=8979.2 ... | quality: ok``
    (the verdict last: ``quality: bad (R-hat 1.42 above 1.2)``)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.written or time.time()))
    head = f"{stamp} {event.run_uid[:8]} {event.analysis} {event.unit} {event.status}"
    if not event.ok:
        return f"{head} {event.error}".rstrip()
    values = []
    for name, value in list(event.flat_summary.items())[: max(0, n_fields)]:
        values.append(f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}")
    tail = ["|", quality_line(event.verdict, event.verdict_reasons)] if event.verdict else []
    return " ".join([head, *values, *tail])


def run(args: argparse.Namespace) -> int:
    from ..transport.events import ResultEvents

    cfg = config_from_args(args)
    if not cfg.broker.events:
        raise CliError("no events address: give --events tcp://HOST:5562 or set [broker] events")
    if args.count is not None and args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}")
    shown = 0
    with ResultEvents(cfg.broker.events, run_uid=args.run, analysis=args.analysis,
                      keys=cfg.security.keys or None) as events:
        try:
            for event in events.iter(timeout_s=args.timeout):
                if args.json:
                    print(strict_json(dataclasses.asdict(event), indent=None), flush=True)
                else:
                    print(format_event(event, args.fields), flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
        except KeyboardInterrupt:
            pass
    if args.timeout is not None and (args.count is None or shown < args.count):
        print(f"no result for {args.timeout:g} s; {shown} shown", file=sys.stderr)
    return 0
