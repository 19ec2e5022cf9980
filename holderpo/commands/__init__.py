"""One module per `holderpo` subcommand: `add_parser(subparsers)` and `run(args) -> int`."""
