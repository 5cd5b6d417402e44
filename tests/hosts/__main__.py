"""CLI: python -m tests.hosts {create N | list | destroy [NAME…] | leftovers}."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import testhosts


def main(argv: list[str] | None = None) -> int:
    # --inventory is accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--inventory",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"inventory file that lists the hosts created through it (default: {testhosts.DEFAULT_INVENTORY})",
    )
    parser = argparse.ArgumentParser(prog="python -m tests.hosts", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="ensure N hosts run (idempotent)", parents=[common])
    create.add_argument("count", type=int)
    create.add_argument("--first", type=int, default=1, help="number of the first host (vf<first>); default 1")
    create.add_argument(
        "--seed", type=Path, default=None, help="a seed layer (tests/hosts/seed.py) the new hosts boot with"
    )
    sub.add_parser("list", help="the running hosts", parents=[common])
    destroy = sub.add_parser("destroy", help="stop and remove hosts (all without names)", parents=[common])
    destroy.add_argument("names", nargs="*")
    sub.add_parser("leftovers", help="exit 1 if any test host leaves anything on this machine", parents=[common])
    args = parser.parse_args(argv)
    args.inventory = getattr(args, "inventory", testhosts.DEFAULT_INVENTORY)

    if args.command == "create":
        started = time.monotonic()
        hosts = testhosts.create(args.count, args.inventory, first=args.first, seed=args.seed)
        print(f"{len(hosts)} host(s) ready in {time.monotonic() - started:.1f} s; inventory: {args.inventory}")
    elif args.command == "list":
        for host in testhosts.list_hosts():
            print(f"{host.name}\t{host.address}\tpid {host.pid}")
    elif args.command == "destroy":
        testhosts.destroy(args.names or None, args.inventory)
    elif args.command == "leftovers":
        found = testhosts.leftovers()
        for line in found:
            print(line)
        if found:
            return 1
        print("no test host leftovers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
