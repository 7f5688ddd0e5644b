"""What starting costs, measured (docs/benchmarks.md, "Start-up"): the command line's ``--version`` and
``--help``, ``experiment --dry-run`` of a shipped experiment, and counting an encoder's FLOPs with torch's
FlopCounterMode (what a run does at start-up for an encoder that declares no count), on ESM-2 35M.

    .venv/bin/python benchmarks/startup.py --repeats 5

Each command is a fresh process (its imports included); times are wall seconds, the median and the
range over the repeats, with the machine's load average beside them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BIN = Path(sys.executable).parent
COMMANDS = {
    "protjepa --version": [str(BIN / "protjepa"), "--version"],
    "protjepa --help": [str(BIN / "protjepa"), "--help"],
    "python -m protjepa --version": [sys.executable, "-m", "protjepa", "--version"],
    "protjepa experiment experiments/paper_small --dry-run": [str(BIN / "protjepa"), "experiment",
                                                              "experiments/paper_small", "--dry-run"],
}


def timed(run, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return seconds


def line(what: str, seconds: list[float]) -> str:
    return (f"{what:<58} median {statistics.median(seconds):6.2f} s  (min {min(seconds):.2f}, max {max(seconds):.2f}; "
            f"load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the FLOP count (a run's)")
    args = parser.parse_args()
    for what, argv in COMMANDS.items():
        print(line(what, timed(lambda: subprocess.run(argv, capture_output=True, check=True), args.repeats)),
              flush=True)

    from protjepa.build import build_model
    from protjepa.recipe import parse_recipe

    torch.set_num_threads(args.threads)
    model = build_model(parse_recipe({"name": "count", "encoder": {"name": "esm2", "preset": "esm2_35m"},
                                      "objectives": [{"name": "mlm"}]}))
    encoder = model.encoder
    full, half = encoder.num_layers, encoder.resolve_layer("half")
    print(line("esm2_35m: FlopCounterMode count, last layer and LM head",
               timed(lambda: encoder.count_flops({full}), args.repeats)))
    print(line("esm2_35m: FlopCounterMode count, last and half depth, LM head",
               timed(lambda: encoder.count_flops({full, half}), args.repeats)))


if __name__ == "__main__":
    main()
