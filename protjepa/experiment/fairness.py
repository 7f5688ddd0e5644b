"""Whether an experiment's arms were matched fairly: one precision for them all, and steps and tokens
that differ only as far as the arms' own step costs explain.

**Precision.** ``train.precision: auto`` times bf16 against fp32 when a run starts (on a CPU:
:func:`protjepa.precision.choose_bf16`), and on a busy machine that timing swings (a measured bf16
speed-up of 2.48x and of 20.95x minutes apart): decided run by run, two arms of one experiment could
train in different precisions. So an experiment decides ``auto`` once, per device type its runs
train on, records the decision in ``<output>/precision.json`` (later invocations read it back), and
every arm whose recipe says ``auto`` trains with that precision written into its recipe. The report
says what was decided and which precision each run recorded (its summary's ``precision``).

**Pace.** Under a token, step or FLOP budget the arms' steps and tokens follow from the budget and
their step costs alone. Under a wall-clock budget they also follow from how fast the machine ran
each arm: a run slowed by other work on a shared machine gets fewer steps than its step cost
explains. Each finished run's speed is measured in model FLOPs per training-clock second (tokens per
second where FLOPs are not counted): the step cost is in it, so arms of different recipes compare.
A run more than ``SLOWER_BY`` x slower than the fastest arm is named in a warning, with the steps
its step cost would have given it at that speed.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from protjepa.experiment.records import RunData
from protjepa.experiment.spec import Experiment, RunPlan
from protjepa.precision import choose_bf16

PRECISION = "precision.json"
# The shipped recipes' steps (MLM, MLM+JEPA masked, EMA half-depth, VICReg; ESM-2 8M) ran within 1.5x of each
# other in model FLOPs per second on the 2-core machine, busy (docs/benchmarks.md): twice that is other work.
SLOWER_BY = 2.0


@dataclass(frozen=True)
class PrecisionDecision:
    """``train.precision: auto`` for the runs of one device type, decided once for the experiment."""

    bf16: bool
    why: str  # choose_bf16's line: what runs and why
    decided: str  # when (UTC)

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"


def device_type(plan: RunPlan) -> str:
    """``cuda`` or ``cpu``: where the run's ``train.device`` puts it on this machine."""
    device = plan.recipe.train.device
    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def read_precision(experiment: Experiment) -> dict[str, PrecisionDecision]:
    """The experiment's recorded decisions (device type -> decision); empty before the first is made."""
    path = experiment.output / PRECISION
    return {device: PrecisionDecision(**decision) for device, decision in json.loads(path.read_text()).items()} \
        if path.is_file() else {}


def decide_precision(experiment: Experiment, plans: list[RunPlan]) -> dict[str, PrecisionDecision]:
    """``auto`` decided for each device type the ``auto`` runs among ``plans`` train on, unless decided by an
    earlier invocation; every decision recorded in ``<output>/precision.json``."""
    decisions = read_precision(experiment)
    wanted = {device_type(plan) for plan in plans if plan.recipe.train.precision == "auto"} - set(decisions)
    for device in sorted(wanted):
        bf16, why = choose_bf16("auto", device, "train.precision")
        decisions[device] = PrecisionDecision(bf16, why, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if wanted:
        experiment.output.mkdir(parents=True, exist_ok=True)
        path = experiment.output / PRECISION
        partial = path.with_name(f".{PRECISION}.partial")
        partial.write_text(json.dumps({d: asdict(decision) for d, decision in decisions.items()}, indent=2) + "\n")
        partial.replace(path)
    return decisions


def with_decided_precision(plan: RunPlan, decisions: dict[str, PrecisionDecision]) -> tuple[RunPlan, str | None]:
    """``plan`` with ``train.precision: auto`` replaced by the experiment's decision, and the line its run
    prints about it (None: its recipe names a precision of its own)."""
    if plan.recipe.train.precision != "auto":
        return plan, None
    decision = decisions[device_type(plan)]
    train = plan.recipe.train.model_copy(update={"precision": decision.precision})
    recipe = plan.recipe.model_copy(update={"train": train})
    return (RunPlan(plan.variant, plan.seed, recipe, plan.run_dir),
            f"train.precision auto, decided once for the experiment on {decision.decided}: {decision.why}")


def precision_lines(experiment: Experiment, runs: list[RunData]) -> list[str]:
    """The report's lines on precision: what the experiment decided, and the precision every finished run
    recorded, or a warning naming the runs that trained in another."""
    decisions = read_precision(experiment)
    lines = [f"- precision: `train.precision: auto` decided once for the experiment ({device}, {d.decided}): {d.why}"
             for device, d in decisions.items()]
    recorded: dict[str, list[str]] = {}
    for run in runs:  # runs made before summaries recorded their precision say nothing
        if run.done is not None and "precision" in run.summary:
            recorded.setdefault(run.summary["precision"], []).append(run.plan.label)
    if len(recorded) == 1:
        lines.append(f"- every run trained in {next(iter(recorded))}")
    elif recorded:
        lines.append("- **warning: the runs trained in different precisions**: "
                     + "; ".join(f"{precision}: {', '.join(labels)}" for precision, labels in recorded.items()))
    return lines


@dataclass(frozen=True)
class Pace:
    """A finished run's speed, in model FLOPs (or tokens) per training-clock second, and its step cost."""

    label: str
    steps: int
    tokens: int
    per_second: float
    per_step: float


def paces(runs: list[RunData]) -> tuple[list[Pace], str]:
    """Each finished run's pace, and its unit: model FLOPs where every run counted them, else tokens."""
    done = [r for r in runs if r.done is not None and r.summary.get("train_seconds") and r.summary["steps"]]
    counted = bool(done) and all(r.summary.get("flops") for r in done)
    key, unit = ("flops", "model FLOPs") if counted else ("tokens", "tokens")
    return [Pace(r.plan.label, r.summary["steps"], r.summary["tokens"], r.summary[key] / r.summary["train_seconds"],
                 r.summary[key] / r.summary["steps"]) for r in done], unit


def pace_warnings(experiment: Experiment, runs: list[RunData]) -> list[str]:
    """Under a wall-clock budget, a warning for each arm the machine ran more than ``SLOWER_BY`` x slower than
    the fastest (per model FLOP, or per token): its steps and tokens differ from the others' by more than
    its step cost explains."""
    if experiment.spec.budget.wall_clock is None:
        return []
    found, unit = paces([r for r in runs if r.plan.variant in {v.name for v in experiment.variants}])
    if len(found) < 2:
        return []
    fastest = max(found, key=lambda p: p.per_second)
    lines = []
    for pace in found:
        slower = fastest.per_second / pace.per_second
        if slower > SLOWER_BY:
            expected = pace.steps * slower  # its own step cost, at the fastest arm's speed
            lines.append(f"- **warning: {pace.label} ran {slower:.1f}x slower than {fastest.label}** "
                         f"({pace.per_second:.3g} against {fastest.per_second:.3g} {unit} per second of training "
                         f"clock): {pace.steps} steps and {pace.tokens:,} tokens, where its step cost "
                         f"({pace.per_step:.3g} {unit} a step) at that speed gives about {expected:.0f} steps. "
                         "The wall-clock budget matched time on a machine whose speed changed between the arms "
                         "(other work on it): compare under a tokens, steps or flops budget")
    return lines


def matching_lines(experiment: Experiment, runs: list[RunData]) -> list[str]:
    """The report header's lines on how fairly the arms were matched: precision, then pace."""
    return precision_lines(experiment, runs) + pace_warnings(experiment, runs)
