"""``protjepa train RECIPE``: train a recipe on Composer under its budget.

``--main-job`` is a quick demonstration (``make main`` runs it on the paper's masked-position
MLM+JEPA recipe): a few minutes of training clock and, on a machine without a GPU, a smaller
crop and batch so that those minutes hold some dozens of steps; it says what it changed.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

MAIN_JOB_BUDGET = "3min"
# esm2_8m on a laptop-class CPU: a few seconds per step at these sizes.
MAIN_JOB_CPU = {"data.crop": 128, "data.batch_tokens": 2048, "train.monitor_sequences": 32,
                "train.log_every": 2, "train.monitor_every": 10}


def configure(parser) -> None:
    parser.add_argument("recipe", help="recipe YAML file, or a shipped recipe's name (protjepa recipes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. data.batch_tokens=4096 (repeatable)")
    parser.add_argument("--budget", help="replaces the recipe's budget: 90s, 30min, 8h, 1h30m, 2e8tok, 1000steps, "
                        "3e14flop")
    parser.add_argument("--run-dir", help="where the run is written (default: the recipe's train.run_dir, runs/<name>)")
    parser.add_argument("--data-root", help="folder the recipe's data paths are relative to (default: ../shared/data)")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                        help="continue the run under the same budget: from its latest checkpoint, or the one given")
    parser.add_argument("--main-job", action="store_true",
                        help=f"a quick demonstration run: a {MAIN_JOB_BUDGET} budget and, without a GPU, a smaller "
                             "crop and batch so that it still takes some dozens of steps (a new run folder each time)")


def describe_budget(budget: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (budget or {}).items()) or "default"


def main_job_settings(recipe_raw: dict, has_gpu: bool,
                      budget: dict | None = None) -> tuple[list[tuple[str, Any]], list[str]]:
    """Overrides (key path, value) fitting the main job to this machine, and lines saying what changed."""
    budget = budget or {"wall_clock": MAIN_JOB_BUDGET}
    overrides: list[tuple[str, Any]] = [("budget", budget)]
    notes = [f"main job: budget {describe_budget(budget)} (the recipe's: {describe_budget(recipe_raw.get('budget'))})"]
    if not has_gpu:
        changed = []
        for key, value in MAIN_JOB_CPU.items():
            section, name = key.split(".")
            overrides.append((key, value))
            changed.append(f"{key} {(recipe_raw.get(section) or {}).get(name, 'default')} -> {value}")
        # auto: bf16 autocast where this CPU multiplies bf16 natively and faster, else fp32 (the summary says which)
        overrides += [("train.device", "cpu"), ("train.precision", "auto")]
        notes.append("main job on CPU (no GPU found), sized for a few minutes: " + ", ".join(changed))
    return overrides, notes


def unused_run_dir(run_dir: Path) -> Path:
    """``run_dir``, or the first of ``run_dir-2``, ``run_dir-3``, ... that does not exist yet."""
    candidate, n = run_dir, 1
    while candidate.exists():
        n += 1
        candidate = run_dir.with_name(f"{run_dir.name}-{n}")
    return candidate


def run(args) -> int:
    import torch

    from protjepa import shipped
    from protjepa.durations import parse_budget
    from protjepa.recipe import load_recipe, parse_assignment, zero_weight_notes
    from protjepa.yamlio import peek_mapping

    budget = parse_budget(args.budget) if args.budget is not None else None
    overrides, notes = ([("budget", budget)] if budget else []), []
    if args.main_job:  # an unreadable recipe: load_recipe below reports the problem with its file and line
        raw = peek_mapping(shipped.find(args.recipe))
        overrides, notes = main_job_settings(raw, torch.cuda.is_available(), budget)
    recipe = load_recipe(args.recipe, overrides + [parse_assignment(a) for a in args.overrides], "--set",  # --set wins
                         this_machine=True)
    notes += zero_weight_notes(recipe)
    run_dir = Path(args.run_dir or recipe.train.run_dir.format(name=recipe.name))
    if args.main_job and not args.run_dir and not args.resume:
        run_dir = unused_run_dir(run_dir)  # running the demo twice makes a second run

    from protjepa.errors import Interrupted, sigterm_interrupts
    from protjepa.training.parallel import end_process_group
    from protjepa.training.trainer import LATEST, ResumableError, RunInterrupted, train

    resume = LATEST if args.resume == "latest" else Path(args.resume) if args.resume else None
    with sigterm_interrupts() as signals:
        try:
            train(recipe, run_dir, data_root=args.data_root, resume=resume, notes=tuple(notes))
            end_process_group()  # the command's one run is over: the launcher's ranks exit cleanly
        except RunInterrupted as exc:
            raise Interrupted(f"{exc}; {how_to_go_on(args, run_dir, exc.newest)}",
                              signals[-1] if signals else signal.SIGINT) from None
        except ResumableError as exc:
            raise type(exc)(f"{exc}; {how_to_go_on(args, run_dir, exc.newest)}", exc.newest) from None
    return 0


def how_to_go_on(args, run_dir: Path, newest: Path | None) -> str:
    """``continue with: COMMAND`` (from ``newest``), or ``no checkpoint yet; start again with: COMMAND``
    (``--resume`` then starts the stopped run again in its folder)."""
    again = "continue with" if newest else "no checkpoint yet; start again with"
    return f"{again}: {resume_command(args, run_dir)}"


def resume_command(args, run_dir: Path) -> str:
    """The command line that goes on with this training in ``run_dir`` (``--resume``); through Composer's
    launcher, as many processes a machine, when the run had several."""
    import shlex

    launcher = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by Composer's launcher
        launcher = ["composer", "-n", os.environ.get("LOCAL_WORLD_SIZE", "1"), "-m"]
    words = [*launcher, "protjepa", "train", args.recipe, "--run-dir", str(run_dir)]
    words += ["--budget", args.budget] if args.budget is not None else []
    words += ["--data-root", args.data_root] if args.data_root else []
    words += ["--main-job"] if args.main_job else []
    for assignment in args.overrides:
        words += ["--set", assignment]
    return shlex.join(words + ["--resume"])
