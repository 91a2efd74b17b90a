"""``xafs-stream status``: the broker's state in a terminal: queue, workers, failing units, rejects.

Exit code 0 when the broker answers and nothing is failing; 1 when units are failing to store; 2 when the
broker does not answer (for scripts and monitoring).
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_service_options, config_from_args, strict_json
from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the broker's queue, workers, failing units and rejects",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="the broker's whole status as JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker (default 5)")
    add_service_options(p)
    p.set_defaults(func=run)


def format_status(st: dict[str, Any]) -> str:
    """A few lines for people: queue counts, each worker, each failing unit, the latest rejects."""
    s = st.get("stats", {})
    lines = [f"queue: {st['pending']} pending, {st['inflight']} in flight, {st['stored']} stored "
             f"({st['stored_bytes'] / 1e6:.1f} MB), {s.get('done', 0)} done, {st.get('failing', 0)} failing",
             f"since start: {s.get('submitted', 0)} submitted, {s.get('redelivered', 0)} redelivered, "
             f"{s.get('poisoned', 0)} poisoned, {s.get('rejected', 0)} rejected, {s.get('denied', 0)} denied, "
             f"{s.get('store_errors', 0)} store errors"]
    for lane, info in st.get("lanes", {}).items():
        shedding = (f"; SHEDDING: slow analyses only for {st['overload']['shed_keep']}" if info.get("shedding")
                    else "")
        lines.append(f"{lane} lane: {info['pending']} waiting, {info['inflight']} in flight, "
                     f"{info['workers']} worker(s){shedding}")
    workers = st.get("workers", [])
    lines.append(f"workers: {len(workers)}")
    for w in workers:
        lane = f" ({w['lane']} lane)" if w.get("lane") else ""
        lines.append(f"  {w.get('worker') or w['id']}{lane} on {w.get('host', '?')} pid {w.get('pid', '?')}: "
                     f"{w['inflight']} in flight, {w['done']} done, heard {w['idle_s']:.1f} s ago")
    for f in st.get("failing_units", []):
        lines.append(f"failing: {f['unit_id']} ({f['failures']}x, retry in {f['retry_in_s']:.0f} s): {f['reason']}")
    for r in st.get("recent_rejections", [])[-5:]:
        lines.append(f"rejected: {r}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..transport.publisher import broker_status

    cfg = config_from_args(args)
    try:
        st = broker_status(cfg.broker.frontend, timeout_s=args.timeout, keys=cfg.security.keys or None)
    except TimeoutError as exc:
        raise CliError(f"{exc} (is the service running? is [broker] frontend right?)") from None
    print(strict_json(st, indent=1) if args.json else format_status(st))
    return 1 if st.get("failing") else 0
