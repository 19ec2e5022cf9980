"""The `holderpo` command line.

Each subcommand lives in its own module under `holderpo/commands/` with two functions:
`add_parser(subparsers)` declares its options and `run(args) -> int` does the work. Heavy
libraries (torch, transformers, textworld) are imported inside `run`, so `holderpo --help`
stays instant.

    holderpo doctor                      # versions, data and the embedded model
    holderpo games generate --out games/ --num 12 --seed 0
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand name -> module under holderpo.commands; the order is the order of `--help`.
COMMANDS = ("doctor", "games", "eval", "train", "compare", "sft", "replay")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="holderpo",
        description="Train, evaluate and replay LLM agents on ALFWorld with HölderPO.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"holderpo.commands.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
