"""Parse a `vllm serve` command line with the installed vLLM's own argument parser.

Run with the environment's python: `python vllm_argcheck.py serve MODEL --flag ...`.
Exits 0 when vLLM would accept the arguments, 2 with vLLM's own error otherwise, so a
flag the pinned vLLM does not know fails the play before the running unit is touched.
Nothing is loaded: no model, no GPU, no network.
"""

import argparse
import sys


def build_parser():
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(dest="subcommand", required=True)
    command = ServeSubcommand()
    command.subparser_init(subparsers)
    return parser, command


def main(argv):
    if not argv or argv[0] != "serve":
        print("usage: vllm_argcheck.py serve MODEL [flags...]", file=sys.stderr)
        return 64
    parser, command = build_parser()
    args = parser.parse_args(argv)  # exits 2 with vLLM's message on an unknown or bad flag
    try:
        command.validate(args)
    except (ValueError, TypeError, argparse.ArgumentError) as exc:
        print(f"vllm serve would refuse these arguments: {exc}", file=sys.stderr)
        return 2
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
