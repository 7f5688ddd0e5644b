"""CPU bf16 against fp32 in training: the main job's recipe, seed and batches, trained for the
same number of steps in each precision; the MLM losses at the end are compared.

    nice -n 5 .venv/bin/python benchmarks/bf16_parity.py --data-root ../shared/data --steps 200

Passes (exit 0) when bf16's final MLM loss (mean of the last ``--last`` steps) is within
``--tolerance`` of fp32's and every logged value of both runs is finite. The automated
version of this check, small and fast, is tests/test_precision.py.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import yaml

from protjepa.commands.train import main_job_settings
from protjepa.recipe import load_recipe
from protjepa.training.summary import read_records
from protjepa.training.trainer import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mlm_jepa_masked.yaml"


def train_records(precision: str, steps: int, run_dir: Path, data_root: str | None) -> tuple[list[dict], dict]:
    """Every step's logged training record, and the run summary, of the main job at ``precision``."""
    overrides, _ = main_job_settings(yaml.safe_load(RECIPE.read_text()), has_gpu=False, budget={"steps": steps})
    recipe = load_recipe(RECIPE, overrides + [f"train.precision={precision}", "train.log_every=1",
                                              f"train.monitor_every={steps}"])
    result = train(recipe, run_dir, data_root=data_root, console=False)
    return [r for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "train"], result.summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--last", type=int, default=10, help="steps averaged for the final loss")
    parser.add_argument("--tolerance", type=float, default=0.01, help="relative, on the final MLM loss")
    parser.add_argument("--data-root")
    parser.add_argument("--json", help="write the comparison here")
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            records, summary = train_records(precision, args.steps, Path(tmp) / precision, args.data_root)
            losses = [r["mlm/loss"] for r in records]
            out[precision] = dict(
                final_mlm_loss=sum(losses[-args.last:]) / len(losses[-args.last:]), last_step_mlm_loss=losses[-1],
                held_out_mlm_loss=summary["monitor_end"]["val/mlm/loss"], train_seconds=summary["train_seconds"],
                tokens_per_s=summary["tokens_per_s"],
                finite=all(math.isfinite(v) for r in records for v in r.values() if isinstance(v, float)),
            )
    gap = out["bf16"]["final_mlm_loss"] / out["fp32"]["final_mlm_loss"] - 1
    passed = abs(gap) <= args.tolerance and out["fp32"]["finite"] and out["bf16"]["finite"]
    out.update(steps=args.steps, relative_gap=gap, tolerance=args.tolerance, passed=passed)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
