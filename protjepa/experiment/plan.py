"""What an experiment will do, known without training anything: the runs ``--only`` selects, each
run's state on disk, the controls they need, and the plan ``--dry-run`` prints. Kept apart from the
runner, so that a dry run imports no trainer (docs/benchmarks.md: under 10 s on 2 busy cores)."""
from __future__ import annotations

from protjepa.checkpoint_file import latest_checkpoint
from protjepa.encoders.weights import NATIVE_SPEC
from protjepa.experiment.fairness import read_precision
from protjepa.experiment.records import read_done
from protjepa.experiment.spec import ControlPlan, Experiment, ExperimentError, RunPlan


def selected_runs(experiment: Experiment, only: list[str] | tuple[str, ...] = ()) -> list[RunPlan]:
    """The runs of the ``only`` variants (every run when empty); an unknown name is a one-line error."""
    names = [v.name for v in experiment.variants]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ExperimentError(f"--only {unknown[0]}: no such variant in {experiment.path} (variants: {', '.join(names)})")
    return [r for r in experiment.runs if not only or r.variant in only]


def run_status(plan: RunPlan) -> str:
    """``done``, ``resume`` (an unfinished run with a checkpoint) or ``new``."""
    if read_done(plan.run_dir) is not None:
        return "done"
    return "resume" if latest_checkpoint(plan.run_dir / "checkpoints") is not None else "new"


def _run_line(plan: RunPlan) -> str:
    enc = plan.recipe.encoder
    objectives = ", ".join(f"{s.id}x{s.weight:g}" for s in plan.recipe.objectives)
    return f"seed {plan.seed}: {run_status(plan):<6} {plan.run_dir}  [{enc.name or enc.component}; {objectives}]"


def chosen_controls(experiment: Experiment, runs: list[RunPlan]) -> list[ControlPlan]:
    """The random-init controls of the shapes ``runs`` train."""
    shapes = {experiment.variant(plan.variant).shape for plan in runs}
    return [c for c in experiment.controls if c.shape in shapes]


def describe_plan(experiment: Experiment, runs: list[RunPlan]) -> str:
    """What ``--dry-run`` prints: every run, its status and the shared settings."""
    spec = experiment.spec
    budget = str(spec.budget)
    decided = "; ".join(f"{device}: {d.precision} (decided {d.decided})"
                        for device, d in read_precision(experiment).items())
    lines = [f"experiment {spec.name} ({experiment.path}) -> {experiment.output}",
             f"budget per run: {budget}; tie tolerance {spec.tie_tolerance:g}; train.precision auto, once for every "
             f"run: {decided or 'decided when the first run starts'}",
             f"probe tasks: {', '.join(t.name for t in experiment.tasks)}"
             f" ({'fast caps' if spec.probe.fast else 'full sets'}, layer {spec.probe.layer})"]
    if experiment.base is not None and experiment.base_checkpoint is not None:
        lines.append(f"base (the variants marked 'from the base' start from its weights): pretrained, not trained "
                     f"here: {experiment.base_checkpoint}")
    elif experiment.base is not None:
        lines += [f"base (the variants marked 'from the base' start from its final weights) from {experiment.base_source}, "
                  f"budget {experiment.base.recipe.budget}", f"  {_run_line(experiment.base)}"]
    chosen = {plan.label for plan in runs}
    for variant in experiment.variants:
        against = f"vs {variant.baseline}" if variant.baseline else "baseline"
        start = ", from the base" if variant.from_base else ""
        lines.append(f"variant {variant.name} ({against}{start}) from {variant.source}")
        lines += [f"  {_run_line(plan)}" for plan in experiment.runs_of(variant.name) if plan.label in chosen]
    for control in chosen_controls(experiment, runs):
        state = "exported" if (control.export / NATIVE_SPEC).is_file() else "new"
        lines.append(f"control {control.label} (untrained): {state:<8} {control.folder}")
    return "\n".join(lines)


