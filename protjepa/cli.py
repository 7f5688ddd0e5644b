"""``protjepa`` command line. Each subcommand lives in ``protjepa/commands/<name>.py``
with ``configure(parser)`` and ``run(args) -> int``; heavy imports stay inside ``run``.
``python -m protjepa`` runs the same."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from protjepa import __version__
from protjepa.errors import Interrupted, UserError
from protjepa.extras import missing_extra

DESCRIPTION = """\
Train protein language models with composable objectives (MLM, JEPA, VICReg, SIGReg)
under a matched budget, and score them on frozen-embedding probes."""
EPILOG = """\
start here:
  protjepa recipes                                the shipped recipes, with what each one trains
  protjepa train mlm_jepa_masked --budget 5min    train one (a name, or your own YAML file)
  protjepa probe runs/mlm_jepa_masked             score the trained encoder
'protjepa COMMAND --help' gives each command's options."""

SUBCOMMANDS = {
    "recipes": "list the shipped recipes and experiments, or copy one out to edit",
    "validate": "check recipes against the schema and the registries",
    "list": "print the registered encoders and objectives",
    "train": "train a recipe on Composer under its budget",
    "probe": "score a checkpoint on the frozen-embedding probe suite",
    "readout": "score a run's latent term on held-out masked positions against a constant and ridge readouts",
    "base": "write a finished MLM run's encoder as a pretrained base to continue from (bf16, parts, digests)",
    "compare": "compare two probed runs task by task (W/L/T, sign test)",
    "bench": "measure training-step throughput against transformers' ESM",
    "experiment": "train and probe a list of recipes under one budget and write a report",
}


def _module(name: str):
    return importlib.import_module(f"protjepa.commands.{name}")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, as every other error is (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog="protjepa", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"protjepa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in (argv or []) if a in SUBCOMMANDS), None)
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # configure only the command that runs: --version and --help import no command
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
    except ModuleNotFoundError as exc:
        error = missing_extra(exc)
        if error is None:
            raise
        print(f"protjepa: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): stop quietly, and keep Python's exit flush quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:  # a run says where it stopped and how to go on
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"protjepa: {what}{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
