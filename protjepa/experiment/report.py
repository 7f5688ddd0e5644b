"""The experiment report: Markdown that reads on a repository page, and its PNG plots.

Everything is read back from the run directories (``done`` markers, ``metrics.jsonl``,
``probe/results.json``), so the report can be rewritten at any time and shows whatever is
finished. Each variant is compared with its baseline on the mean over its seeds of each
task's main metric; wins, losses and ties use the experiment's tie tolerance and ties are
left out of the one-sided sign test (:mod:`protjepa.evaluation.compare`).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from protjepa.evaluation.compare import Comparison, compare
from protjepa.experiment.plots import plot_collapse, plot_deltas, plot_losses
from protjepa.experiment.records import HELD_OUT_MLM, PLOTS, REPORT, RunData, VariantScores, collect, seed_spread
from protjepa.experiment.spec import Experiment, RunPlan

# --------------------------------------------------------------------------- comparisons


def variant_scores(experiment: Experiment, runs: list[RunData]) -> dict[str, VariantScores]:
    out = {}
    for variant in experiment.variants:
        mine = [r for r in runs if r.plan.variant == variant.name and r.probe is not None]
        if mine:
            out[variant.name] = VariantScores(variant.name, variant.baseline, [r.probe for r in mine],
                                              [r.plan.seed for r in mine])
    return out


def comparisons(experiment: Experiment, scores: dict[str, VariantScores]) -> dict[str, Comparison]:
    """Variant name -> its comparison with its baseline (seed means), where both are probed."""
    tie = experiment.spec.tie_tolerance
    return {
        name: compare(v.mean, scores[v.baseline].mean, tie, name_a=name, name_b=v.baseline)
        for name, v in scores.items()
        if v.baseline is not None and v.baseline in scores
    }


# --------------------------------------------------------------------------- Markdown


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def encoder_text(plan: RunPlan) -> str:
    """``esm2 4 x 128`` / ``modern modern_35m (12 x 480)``: the encoder a run trains."""
    spec, config = plan.recipe.encoder, plan.recipe.encoder_config
    name = spec.name or spec.component
    preset = getattr(config, "preset", None)
    sizes = f"{config.num_layers} x {config.embed_dim}" if hasattr(config, "num_layers") else ""
    return f"{name} {preset} ({sizes})" if preset else f"{name} {sizes}".strip()


def _header(experiment: Experiment, runs: list[RunData]) -> list[str]:
    spec = experiment.spec
    budget = ", ".join(f"{k} {v}" for k, v in spec.budget.model_dump(exclude_none=True).items())
    data = experiment.runs[0].recipe.data
    settings = spec.probe.settings()
    caps = [f"{k} {v}" for k, v in (("max_train", settings.max_train), ("max_test", settings.max_test),
                                    ("max_records", settings.max_records)) if v]
    lines = [
        f"# Experiment {spec.name}",
        "",
        *([spec.description, ""] if spec.description else []),
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{experiment.path}`.",
        "",
        f"- budget of every run: **{budget}** (training clock: monitors, checkpoints and probing excluded)",
        f"- data: `{data.train}`, crop {data.crop}, batch_tokens {data.batch_tokens}"
        + (", packing" if data.packing else ""),
        f"- probes: {', '.join(t.name for t in experiment.tasks)}; layer {spec.probe.layer}; "
        + ("each task's fast caps" if settings.fast else "full task sets")
        + (f", {', '.join(caps)}" if caps else "") + f"; subsample seed {settings.seed}",
        f"- a tie when |delta| <= {spec.tie_tolerance:g}; each variant is scored by the mean over its seeds",
        "- variants:",
    ]
    for v in experiment.variants:
        role = "baseline" if v.baseline is None else f"vs {v.baseline}"
        lines.append(f"  - **{v.name}** ({role}): `{v.source}`, {encoder_text(experiment.runs_of(v.name)[0])}, "
                     f"seeds {', '.join(map(str, v.seeds))}")
    missing = [r.plan.label for r in runs if r.done is None]
    unprobed = [r.plan.label for r in runs if r.done is not None and r.probe is None]
    if missing:
        lines.append(f"- **not trained yet**: {', '.join(missing)}")
    if unprobed:
        lines.append(f"- **not probed**: {', '.join(unprobed)}")
    return lines


def _verdicts(comps: dict[str, Comparison]) -> list[str]:
    lines = ["## Verdicts", "", "| variant | vs | wins | losses | ties | sign test p (one-sided) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {c.name_b} | {c.count('W')} | {c.count('L')} | {c.count('T')} | {c.p_value:.4g} |"
              for name, c in comps.items()]
    return lines


def _task_tables(scores: dict[str, VariantScores], comps: dict[str, Comparison]) -> list[str]:
    """One table per baseline: tasks down, the baseline then each variant across."""
    lines = ["## Per-task results", "",
             "Each cell: the variant's score (mean over seeds), its delta to the baseline and W / L / T."]
    for baseline in dict.fromkeys(c.name_b for c in comps.values()):
        variants = [name for name, c in comps.items() if c.name_b == baseline]
        base = scores[baseline].mean["tasks"]
        lines += ["", f"### Against {baseline}", "",
                  f"| task | metric | {baseline} | " + " | ".join(variants) + " |",
                  "|---|---|---:|" + "---:|" * len(variants)]
        for task, result in base.items():
            cells = []
            for name in variants:
                row = next((r for r in comps[name].rows if r.task == task), None)
                cells.append("n/a" if row is None else
                             f"{row.a:.4f} ({row.delta:+.4f}, {row.outcome(comps[name].tie)})")
            lines.append(f"| {task} | {result['metric']} | {_fmt(result['value'])} | " + " | ".join(cells) + " |")
        lines.append("| **W / L / T** | | | " + " | ".join(
            f"**{comps[n].count('W')} / {comps[n].count('L')} / {comps[n].count('T')}**" for n in variants) + " |")
        lines.append("| **sign test p** | | | " + " | ".join(f"{comps[n].p_value:.4g}" for n in variants) + " |")
        unmatched = [f"{n}: {why}" for n in variants for why in comps[n].unmatched]
        warnings = sorted({w for n in variants for w in comps[n].warnings})
        lines += [""] * bool(unmatched or warnings) + [f"- not compared: {u}" for u in unmatched]
        lines += [f"- warning: {w}" for w in warnings]
    return lines


def _budget_table(runs: list[RunData]) -> list[str]:
    lines = ["## Budget used", "",
             "Training clock counts only training steps (the budget's wall-clock); tokens are non-padding residues; "
             "FLOPs are model matmul FLOPs (docs/recipes.md, budget).",
             "", "| run | steps | tokens | FLOPs | training clock (s) | tokens/s | final loss | held-out MLM loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        s = run.summary
        if not s:
            lines.append(f"| {run.plan.label} | not trained yet | | | | | | |")
            continue
        final = s.get("final", {}).get("loss")
        mlm = s.get("monitor_end", {}).get(HELD_OUT_MLM)
        flops = "n/a" if s.get("flops") is None else f"{s['flops']:.3g}"
        lines.append(f"| {run.plan.label} | {s['steps']} | {s['tokens']:,} | {flops} | {s['train_seconds']:.4g} | "
                     f"{s['tokens_per_s']:,.0f} | {_fmt(final)} | {_fmt(mlm)} |")
    return lines


def _collapse_table(runs: list[RunData]) -> list[str]:
    lines = ["## Collapse monitors", "",
             "On a fixed held-out batch: the per-dimension std of L2-normalised mean embeddings (0 when every "
             "sequence maps to one direction) and the effective rank of the mean embeddings (1 for a single "
             "direction). A collapsing run shows both falling towards those floors.", "",
             "| run | embedding std start -> end | effective rank start -> end |", "|---|---:|---:|"]
    for run in runs:
        start, end = run.summary.get("monitor_start"), run.summary.get("monitor_end")
        if not start or not end:
            lines.append(f"| {run.plan.label} | n/a | n/a |")
            continue
        lines.append(f"| {run.plan.label} | {start['monitor/embed_std']:.4f} -> {end['monitor/embed_std']:.4f} | "
                     f"{start['monitor/effective_rank']:.2f} -> {end['monitor/effective_rank']:.2f} |")
    return lines


def _seed_noise(scores: dict[str, VariantScores], comps: dict[str, Comparison], tie: float) -> list[str]:
    lines = ["## Seed noise", ""]
    multi = {name: v for name, v in scores.items() if len(v.probed) > 1}
    if not multi:
        return lines + ["No variant has two probed seeds: the report cannot say how large seed noise is."]
    spreads = {name: seed_spread(v.probed) for name, v in multi.items()}
    lines += ["Spread = max - min over seeds of a variant's score on a task. A delta is *beyond noise* when "
              "it is larger than the spread of both its variant and its baseline (where they have two seeds).", "",
              "| task | " + " | ".join(f"spread {n}" for n in multi) + " | largest abs delta |",
              "|---|" + "---:|" * (len(multi) + 1)]
    tasks = list(next(iter(multi.values())).probed[0]["tasks"])
    for task in tasks:
        deltas = [abs(r.delta) for c in comps.values() for r in c.rows if r.task == task]
        lines.append(f"| {task} | " + " | ".join(_fmt(spreads[n].get(task)) for n in multi) +
                     f" | {_fmt(max(deltas) if deltas else None)} |")
    lines.append("")
    for name, v in multi.items():
        values = list(spreads[name].values())
        null = compare(v.probed[1], v.probed[0], tie, f"{name} seed {v.seeds[1]}", f"seed {v.seeds[0]}")
        lines.append(f"- **{name}**: median spread {_fmt(statistics.median(values) if values else None)}; its seed "
                     f"{v.seeds[1]} against its seed {v.seeds[0]} (same recipe: only noise) scores "
                     f"{null.count('W')} W / {null.count('L')} L / {null.count('T')} T, p = {null.p_value:.3g}")
    for name, c in comps.items():
        noise = [max(spreads.get(name, {}).get(r.task, 0.0), spreads.get(c.name_b, {}).get(r.task, 0.0))
                 for r in c.rows]
        measured = [(r, n) for r, n in zip(c.rows, noise) if name in spreads or c.name_b in spreads]
        beyond = sum(abs(r.delta) > n for r, n in measured)
        lines.append(f"- {name} vs {c.name_b}: {beyond} of {len(measured)} deltas are beyond seed noise")
    return lines


def _notes(runs: list[RunData]) -> list[str]:
    """Each task's probe notes (subsampling, splits, leakage) and errors, once per distinct text."""
    notes: dict[str, list[str]] = {}
    for run in runs:
        for task, result in ((run.probe or {}).get("tasks") or {}).items():
            found = list(result.get("notes", []))
            if result.get("error"):
                found.append(f"{run.plan.label}: skipped: {result['error']}")
            if result.get("leakage"):
                found.append("in the pretraining corpus: " + "; ".join(
                    f"{kind} " + ", ".join(f"{n} {part}" for part, n in parts.items())
                    for kind, parts in result["leakage"].items()))
            notes.setdefault(task, [])
            notes[task] += [n for n in found if n not in notes[task] and not n.startswith("queries counted")]
    lines = ["## Probe notes", ""]
    lines += [f"- {task}: {note}" for task, found in notes.items() for note in found]
    return lines


def render(experiment: Experiment, runs: list[RunData], scores: dict[str, VariantScores],
           comps: dict[str, Comparison], plots: list[Path]) -> str:
    sections = [_header(experiment, runs)]
    if comps:
        sections += [_verdicts(comps), _task_tables(scores, comps)]
    else:
        sections.append(["## Per-task results", "", "No variant and its baseline are both probed yet."])
    sections += [_budget_table(runs), _collapse_table(runs),
                 _seed_noise(scores, comps, experiment.spec.tie_tolerance), _notes(runs)]
    if plots:
        sections.append(["## Plots", ""] + [f"![{p.stem}]({PLOTS}/{p.name})" for p in plots])
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def write_report(experiment: Experiment) -> Path:
    runs = collect(experiment)
    scores = variant_scores(experiment, runs)
    comps = comparisons(experiment, scores)
    folder = experiment.output / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    plots = [plot_losses(runs, experiment, folder / "loss_curves.png"),
             plot_collapse(runs, experiment, folder / "collapse.png")]
    if comps:
        plots.append(plot_deltas(scores, comps, experiment, folder / "deltas.png"))
    path = experiment.output / REPORT
    path.write_text(render(experiment, runs, scores, comps, [p for p in plots if p is not None]))
    return path
