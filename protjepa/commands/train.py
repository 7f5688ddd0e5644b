"""``protjepa train RECIPE``: train a recipe on Composer under its budget.

``--main-job`` is the README's first command: the paper's masked-position MLM+JEPA recipe
for a few minutes of training clock. On a machine without a GPU it also shrinks the
crop and the batch so that a few minutes hold some dozens of steps, and says so.
"""
from __future__ import annotations

import json
from pathlib import Path

MAIN_JOB_BUDGET = "3min"
# esm2_8m on a laptop-class CPU: a few seconds per step at these sizes.
MAIN_JOB_CPU = {"data.crop": 128, "data.batch_tokens": 2048, "train.monitor_sequences": 32,
                "train.log_every": 2, "train.monitor_every": 10}


def configure(parser) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. data.batch_tokens=4096 (repeatable)")
    parser.add_argument("--budget", help="replaces the recipe's budget: 90s, 30min, 8h, 1h30m, 2e8tok, 1000steps")
    parser.add_argument("--run-dir", help="where the run is written (default: the recipe's train.run_dir, runs/<name>)")
    parser.add_argument("--data-root", help="folder the recipe's data paths are relative to (default: ../shared/data)")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                        help="continue the run under the same budget: from its latest checkpoint, or the one given")
    parser.add_argument("--main-job", action="store_true",
                        help=f"the README's demo: a {MAIN_JOB_BUDGET} budget, and CPU-sized batches without a GPU")


def budget_override(budget: dict) -> str:
    return f"budget={json.dumps(budget)}"


def describe_budget(budget: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (budget or {}).items()) or "default"


def main_job_settings(recipe_raw: dict, has_gpu: bool, budget: dict | None = None) -> tuple[list[str], list[str]]:
    """``--set`` assignments fitting the main job to this machine, and lines saying what changed."""
    budget = budget or {"wall_clock": MAIN_JOB_BUDGET}
    overrides = [budget_override(budget)]
    notes = [f"main job: budget {describe_budget(budget)} (the recipe's: {describe_budget(recipe_raw.get('budget'))})"]
    if not has_gpu:
        changed = []
        for key, value in MAIN_JOB_CPU.items():
            section, name = key.split(".")
            overrides.append(f"{key}={value}")
            changed.append(f"{key} {(recipe_raw.get(section) or {}).get(name, 'default')} -> {value}")
        # auto: bf16 autocast where this CPU multiplies bf16 natively, else fp32 (the run summary says which)
        overrides += ["train.device=cpu", "train.precision=auto"]
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
    import yaml

    from protjepa.budget import parse_budget
    from protjepa.recipe import load_recipe

    budget = parse_budget(args.budget) if args.budget else None
    overrides, notes = ([budget_override(budget)] if budget else []), []
    if args.main_job:
        try:
            raw = yaml.safe_load(Path(args.recipe).read_text())
        except (OSError, yaml.YAMLError):
            raw = None  # load_recipe below reports the problem with its file and line
        overrides, notes = main_job_settings(raw if isinstance(raw, dict) else {}, torch.cuda.is_available(), budget)
    recipe = load_recipe(args.recipe, overrides + args.overrides)  # the user's --set wins
    run_dir = Path(args.run_dir or recipe.train.run_dir.format(name=recipe.name))
    if args.main_job and not args.run_dir and not args.resume:
        run_dir = unused_run_dir(run_dir)  # running the demo twice makes a second run

    from protjepa.training.checkpoints import CheckpointError, latest_checkpoint
    from protjepa.training.trainer import train

    resume = None
    if args.resume == "latest":
        resume = latest_checkpoint(run_dir / "checkpoints")
        if resume is None:
            raise CheckpointError(f"{run_dir / 'checkpoints'}: no checkpoint to resume from")
    elif args.resume:
        resume = Path(args.resume)
    train(recipe, run_dir, data_root=args.data_root, resume=resume, notes=tuple(notes))
    return 0
