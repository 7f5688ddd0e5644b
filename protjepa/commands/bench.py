"""``protjepa bench``: training-step throughput, our steps against each other, their floors and
transformers' ESM, side by side in one process; prints the table and writes JSON.

Suites: ``cpu`` (the default; ESM-2 8M, 8 x 256 residues, fp32 with bf16 rows beside where
the CPU has native bf16, and the probe Embedder against transformers'), ``gpu`` (bf16 at crop
512, ESM-2 35M, 150M and 650M, with the xformers and host-sync checks) and ``--quick`` (a smoke
run). Any setting below overrides the suite's. ``--curves PNG`` measures and plots how cost
grows (crop, batch, data pipeline) instead.

``--recipe FILE`` (repeatable) times any recipe's training step instead of the suite: a
``_component_`` encoder, plugin objectives, on the recipe's own data settings (``--set`` changes
them in every recipe, as train's), with its model FLOPs per step and MFU; the rows of several
recipes are set against the first's (:mod:`protjepa.bench.recipes`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def configure(parser) -> None:
    from protjepa.attention import BACKENDS
    from protjepa.commands.arguments import number, whole_number

    parser.add_argument("--suite", choices=("cpu", "gpu"), default="cpu", help="preset settings (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny batches, one repetition")
    parser.add_argument("--size", action="append", metavar="SIZE",
                        help="encoder size (esm2_8m|esm2_35m|esm2_150m|esm2_650m|tiny); repeat for several")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the suite's")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), help="bf16 autocast (a GPU, or a CPU with native bf16)")
    parser.add_argument("--crop", type=whole_number(8), help="residues per sequence in the step rows")
    parser.add_argument("--rows", type=whole_number(1), help="token budget per batch, in rows of crop + 2 tokens")
    parser.add_argument("--packing-crop", type=whole_number(8), help="crop of the padded-vs-packed rows (default 512)")
    parser.add_argument("--packing-tokens", type=whole_number(1),
                        help="token budget of the padded-vs-packed rows (default: 8192 on the CPU suite, "
                             "the step rows' on the GPU suite)")
    parser.add_argument("--repeats", type=whole_number(1), help="interleaved repetitions (medians are over these)")
    parser.add_argument("--steps", type=whole_number(1), help="steps per timed measurement")
    parser.add_argument("--warmup", type=whole_number(0), help="untimed runs of every row before timing")
    parser.add_argument("--backends", nargs="+", choices=[b for b in BACKENDS if b != "auto"],
                        help="attention backends of the encoder rows")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd rows beside the eager ones")
    parser.add_argument("--profile", action="store_true",
                        help="split every step row's time into attention, matrix products, elementwise, optimizer "
                             "and other (torch.profiler); without it only the MLM rows'")
    parser.add_argument("--fill-memory", action="store_true",
                        help="GPU: as many rows as every step row's training step fits in 75%% of the GPU's memory "
                             "(counted on it: protjepa/training/sizing.py); replaces --rows")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="leave out transformers' ESM")
    parser.add_argument("--embed-sequences", type=whole_number(0),
                        help="sequences of the Embedder-vs-transformers rows (0: leave them out)")
    parser.add_argument("--threads", type=whole_number(1), help="torch CPU threads (default: 2 on the CPU suite)")
    parser.add_argument("--peak-tflops", type=number(0, above=True),
                        help="peak TFLOP/s for MFU (default: looked up by GPU name)")
    parser.add_argument("--data-root", help="data folder (default: ../shared/data beside the repo)")
    parser.add_argument("--recipes", help="folder of the recipes the step rows train (default: the shipped recipes)")
    parser.add_argument("--curves", metavar="PNG", help="instead of the suite: cost curves (tokens/s against crop, "
                        "batch tokens and data-pipeline stage), plotted to PNG")
    parser.add_argument("--recipe", action="append", metavar="FILE",
                        help="instead of the suite: time this recipe's training step (a file or a shipped recipe's "
                             "name; a _component_ encoder, plugins: as train runs them) on its own data settings, with "
                             "its model FLOPs per step and MFU; repeat to compare, as ratios against the first")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="with --recipe: override a value of every recipe, as train's --set (e.g. data.crop=128)")
    parser.add_argument("--json", default="bench.json", help="where to write the results (default: bench.json)")


def base_settings(args):
    """The BenchConfig from the suite, --quick and the explicit flags (the size: the suite's)."""
    from dataclasses import replace

    from protjepa.bench.config import SUITES, BenchConfig

    base = replace(BenchConfig(), **SUITES[args.suite])
    if args.quick:
        base = replace(base, **SUITES["quick"])
    explicit = dict(device=args.device, dtype=args.dtype, crop=args.crop, rows=args.rows,
                    packing_crop=args.packing_crop, packing_tokens=args.packing_tokens, repeats=args.repeats,
                    steps=args.steps, warmup=args.warmup, embed_sequences=args.embed_sequences,
                    backends=tuple(args.backends) if args.backends else None, data_root=args.data_root,
                    recipes=args.recipes,
                    peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None)
    return replace(base, compile=args.compile, peer=args.peer, profile=args.profile, fill_memory=args.fill_memory,
                   **{k: v for k, v in explicit.items() if v is not None})


def settings(args) -> list:
    """The BenchConfig of each size to run, from the suite, --quick and the explicit flags."""
    from dataclasses import replace

    from protjepa.bench.config import GPU_SIZES

    base = base_settings(args)
    sizes = args.size or (list(GPU_SIZES) if args.suite == "gpu" else [base.size])
    return [replace(base, size=size) for size in sizes]


# The suite's own settings: a recipe's rows read the recipe instead (its encoder, its data settings).
SUITE_ONLY = {"size": "--size", "crop": "--crop", "rows": "--rows", "packing_crop": "--packing-crop",
              "packing_tokens": "--packing-tokens", "backends": "--backends", "embed_sequences": "--embed-sequences",
              "recipes": "--recipes", "curves": "--curves"}


def check_recipe_flags(args) -> None:
    """--recipe with a flag of the suite's, or --set without --recipe: a one-line error."""
    from protjepa.bench.config import BenchError

    if not args.recipe:
        if args.overrides:
            raise BenchError("--set changes the recipes given with --recipe; the suite's settings are flags "
                             "(protjepa bench --help)")
        return
    given = [(flag, "data.crop=128") for key, flag in SUITE_ONLY.items() if getattr(args, key) is not None]
    given += [("--fill-memory", "data.batch_tokens=fill")] * args.fill_memory + [("--no-peer", "")] * (not args.peer)
    if given:
        flag, example = given[0]
        raise BenchError(f"--recipe: {flag} sets the suite's rows; a recipe's rows train the recipe as written"
                         + (f" (change it with --set, e.g. --set {example})" if example else ""))


def run(args) -> int:
    import torch

    from protjepa.bench.curves import run_curves
    from protjepa.bench.recipes import run_recipes
    from protjepa.bench.report import format_recipe_report, format_report, machine, to_json
    from protjepa.bench.suite import resolve_device, run_suite
    from protjepa.paths import writable_file
    from protjepa.recipe import parse_assignment

    check_recipe_flags(args)
    overrides = [parse_assignment(a) for a in args.overrides]
    path = writable_file(args.json, "--json output")  # before minutes of benchmarking, not after
    if args.curves:
        writable_file(args.curves, "--curves plot")
    configs = settings(args)
    threads = args.threads or (2 if configs[0].device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    info = machine()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.recipe:
        result = run_recipes(args.recipe, overrides, base_settings(args), progress)
        print(format_recipe_report(result, info), flush=True)
        write(to_json([result], info), path)
    elif args.curves:
        out = dict(machine=info, curves=[run_curves(c, resolve_device(c.device), args.curves) for c in configs])
        for point in out["curves"][-1]["points"]:
            print(f"{point['curve']:<9} {point['series']:<30} {point['x']:>6} {point['tokens_per_s']:>10.0f} tokens/s")
        print(f"plotted {args.curves}")
        write(out, path)
    else:
        results = []
        for config in configs:  # each size's table and JSON as it ends: a run stopped early keeps them
            results.append(run_suite(config, progress=progress))
            print(format_report(results[-1:], info), flush=True)
            write(to_json(results, info), path)
    print(f"\nwrote {path}")
    return 0


def write(out: dict, path: Path) -> None:
    from protjepa.bench.report import machine

    out["machine"]["load_average_after"] = machine()["load_average"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
