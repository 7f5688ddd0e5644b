"""``protjepa`` command line. Each subcommand lives in ``protjepa/commands/<name>.py``
with ``configure(parser)`` and ``run(args) -> int``; heavy imports stay inside ``run``."""
from __future__ import annotations

import argparse
import importlib
import sys

from protjepa.errors import UserError

SUBCOMMANDS = {
    "validate": "check recipes against the schema and the registries",
    "list": "print the registered encoders and objectives",
    "train": "train a recipe on Composer under its budget",
    "probe": "score a checkpoint on the frozen-embedding probe suite",
    "compare": "compare two probed runs task by task (W/L/T, sign test)",
    "bench": "measure training-step throughput against transformers' ESM",
    "experiment": "train and probe a list of recipes under one budget and write a report",
}


def _module(name: str):
    return importlib.import_module(f"protjepa.commands.{name}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protjepa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in (argv or []) if a in SUBCOMMANDS), None)
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if wanted in (None, name):  # configure only what runs (keeps start-up light)
            _module(name).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(_module(args.command).run(args) or 0)
    except UserError as exc:
        print(f"protjepa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a run says where it stopped and how to go on
        print(f"protjepa: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
