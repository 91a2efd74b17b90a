"""``xafs-stream keys DIR``: make the CURVE key pairs of the broker and of each role (producer, worker, reader)."""

from __future__ import annotations

import argparse

from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make CURVE keys for authenticated, encrypted sockets ([security] keys)")
    p.add_argument("directory", metavar="DIR", help="where to write the key files (created; never overwritten)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..transport.security import KeyFileError, create_keys

    try:
        files = create_keys(args.directory)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {len(files)} key files to {args.directory}:")
    for path in files:
        print(f"  {path.name}")
    print(f'set [security] keys = "{args.directory}" in the configuration of every host; give each host only the '
          "public .key files and the .key_secret of its own role (the broker host: broker.key_secret)")
    return 0
