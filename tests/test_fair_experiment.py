"""A fair experiment: ``train.precision: auto`` decided once for every arm, however the timing swings;
and under a wall-clock budget, an arm the machine ran slower than its step cost explains is named."""
from __future__ import annotations

import itertools
import json
import re

import pytest
import yaml

from protjepa import precision
from protjepa.experiment.fairness import PRECISION, SLOWER_BY
from protjepa.experiment.records import read_done
from protjepa.experiment.runner import run_experiment
from protjepa.experiment.spec import load_experiment
from protjepa.recipe import load_recipe

SLOW = 0.15  # seconds added to each step of the slowed arm: several times a tiny step's own cost
EXPERIMENT = {
    "name": "fair", "baseline": "mlm", "seeds": [0], "budget": {"wall_clock": "3s"},
    "encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
    "data": {"crop": 64, "batch_tokens": 512, "shuffle_buffer": 64},
    "set": {"train.device": "cpu", "train.threads": 1, "train.log_every": 5, "train.monitor_every": 1000,
            "train.monitor_sequences": 8, "train.checkpoint_at": [1.0], "optim.warmup": 1},
    "variants": [{"recipe": "mlm"},
                 {"recipe": "mlm", "name": "slow",
                  "set": {"train.callbacks": [{"_component_": "slow_steps.SlowSteps", "seconds": SLOW}]}}],
    "probe": {"tasks": ["stability"], "check_leakage": False, "max_train": 100, "max_test": 50},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    """The experiment run once, while the bf16 timing swings between runs: 2.5x, then 0.9x, then 2.5x..."""
    folder = tmp_path_factory.mktemp("fair")
    (folder / "fair.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    experiment = load_experiment(folder / "fair.yaml", output=folder / "out")
    speedups = itertools.cycle([2.5, 0.9])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_bf16_speedup", lambda: next(speedups))
        outcome = run_experiment(experiment, data_root=str(data_root), console=False, log=lambda line: None)
    return experiment, outcome


def test_every_arm_trains_in_the_precision_decided_once(finished):
    experiment, outcome = finished
    expected = "bf16" if precision.cpu_bf16_missing() is None else "fp32"  # the first timing: 2.5x
    decided = json.loads((experiment.output / PRECISION).read_text())
    assert list(decided) == ["cpu"] and decided["cpu"]["bf16"] == (expected == "bf16")
    for plan in experiment.runs:
        assert load_recipe(plan.run_dir / "recipe.yaml").train.precision == expected
        assert read_done(plan.run_dir)["summary"]["precision"] == expected
    report = outcome.report.read_text()
    assert f"- precision: `train.precision: auto` decided once for the experiment (cpu, {decided['cpu']['decided']}): " \
           f"{decided['cpu']['why']}" in report
    assert f"- every run trained in {expected}\n" in report


def test_an_arm_slowed_by_other_work_is_named(finished):
    experiment, outcome = finished
    summaries = {plan.variant: read_done(plan.run_dir)["summary"] for plan in experiment.runs}
    speed = {name: s["flops"] / s["train_seconds"] for name, s in summaries.items()}
    assert summaries["slow"]["steps"] < summaries["mlm"]["steps"]  # the same recipe, fewer steps
    slower = speed["mlm"] / speed["slow"]
    assert slower > SLOWER_BY
    slow = summaries["slow"]
    warning = re.search(r"^- \*\*warning: slow/seed0 ran (\d+\.\d)x slower than mlm/seed0\*\* \((\S+) against (\S+) "
                        r"model FLOPs per second of training clock\): (\d+) steps and ([\d,]+) tokens, where its step "
                        r"cost \((\S+) model FLOPs a step\) at that speed gives about (\d+) steps\. The wall-clock budget",
                        outcome.report.read_text(), re.M)
    assert warning, outcome.report.read_text()
    assert warning.group(1) == f"{slower:.1f}" and warning.group(4) == str(slow["steps"])
    assert warning.group(5) == f"{slow['tokens']:,}" and warning.group(7) == f"{slow['steps'] * slower:.0f}"
    assert "warning: mlm/seed0" not in outcome.report.read_text()
