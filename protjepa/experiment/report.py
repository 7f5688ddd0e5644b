"""The experiment report: Markdown that reads on a repository page, and its PNG plots.

Everything is read back from the run directories (``done`` markers, ``metrics.jsonl``,
``probe/results.json`` and ``probe/examples.npz``), so the report can be rewritten at any time and
shows whatever is finished. Each variant is compared with its baseline task by task under the
per-task rule (:mod:`protjepa.evaluation.seed_stats`: a paired test over seeds, with test-set noise
where the probes kept their scored examples), and over tasks by the verdict's test (a Wilcoxon over
the tasks' standardized deltas, Holm-adjusted over the arms of the table:
:mod:`protjepa.evaluation.verdicts`); the paper's tie rule on the seed means stands beside them. The
report states each rule's false-positive rate on its own design, simulated
(:mod:`protjepa.evaluation.calibration`).

The learning control sets every variant, and the base of a continued-pretraining experiment,
against the random-init encoder of its shape (probed the same way, one per experiment seed),
under the per-task rule: a run that does not beat it on most tasks has not shown that it learned.
"""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from protjepa.evaluation.compare import Comparison, compare
from protjepa.evaluation.family import (
    FamilyStatistics,
    family_statistics,
    statistics_section,
    task_tables,
    verdict_section,
    wlt,
)
from protjepa.evaluation.seed_stats import VariantRuns
from protjepa.evaluation.verdicts import ArmComparison, compare_family
from protjepa.experiment.bases import read_base
from protjepa.experiment.fairness import matching_lines
from protjepa.experiment.latent import VariantLatent, latent_section, variant_latents
from protjepa.experiment.plots import plot_collapse, plot_deltas, plot_losses
from protjepa.experiment.records import (
    HELD_OUT_MLM,
    PLOTS,
    REPORT,
    RunData,
    VariantScores,
    collect,
    collect_controls,
    read_invocations,
    run_data,
)
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


def runs_of(scores: VariantScores) -> VariantRuns:
    return VariantRuns(scores.name, scores.probed, scores.seeds)


def seed_statistics(scores: dict[str, VariantScores], comps: dict[str, Comparison], tie: float) -> FamilyStatistics:
    """The verdict table's statistics: every compared variant against its baseline."""
    return family_statistics({name: runs_of(v) for name, v in scores.items()},
                             {name: c.name_b for name, c in comps.items()}, tie)


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


def objectives_text(plan: RunPlan) -> str:
    """``mlm x1 + jepa x0.45 {loss: cosine, positions: masked}``: a run's objectives, weights and the
    options its recipe gives them."""
    parts = []
    for spec in plan.recipe.objectives:
        options = yaml.safe_dump(spec.options, default_flow_style=True, width=10**6).strip() if spec.options else ""
        parts.append(f"{spec.id} x{spec.weight:g}" + (f" `{options}`" if options else ""))
    return " + ".join(parts)


def _base_line(experiment: Experiment, base: RunData) -> str:
    """The header's line naming the base every variant continues from, and what it used."""
    scratch = [v.name for v in experiment.variants if not v.from_base]
    who = "every variant starts" if not scratch else \
        f"every variant but {', '.join(scratch)} (from scratch) starts"
    if experiment.base_checkpoint is not None:
        return (f"- continued pretraining: {who} from the weights (encoder and LM head) of the pretrained **base** "
                f"`{experiment.base_source}`, {encoder_text(base.plan)}, not trained here ("
                + pretrained_text(read_base(experiment.base_checkpoint)) + "); the variants' budget is their own")
    budget = str(base.plan.recipe.budget)
    used = (f"it ran {base.summary['steps']} steps, {base.summary['tokens']:,} tokens" if base.done
            else "not trained yet")
    return (f"- continued pretraining: {who} from the final weights (encoder and LM head) of the "
            f"**base**, `{experiment.base_source}`, {encoder_text(base.plan)}, budget **{budget}**, seed "
            f"{base.plan.seed} ({used}; `{base.plan.run_dir}`); the variants' budget is their own")


def pretrained_text(record: dict | None) -> str:
    """What a pretrained base's record (``base.json``) says of it, in a few words."""
    if record is None:
        return "no base.json beside it: its training is not recorded"
    training, held = record.get("training", {}), record["held_out"]
    gpus = ", ".join(record.get("machine", {}).get("gpus") or []) or "no GPU"
    return (f"{training.get('steps')} steps, {training.get('tokens') or 0:,} tokens, budget {training.get('budget')}, "
            f"on {gpus}; held-out MLM loss {held['mlm_loss']:.4f}, {held['under_unigram']:.4f} nats under the "
            f"unigram entropy {held['unigram_entropy']:.4f}")


def _header(experiment: Experiment, runs: list[RunData]) -> list[str]:
    spec = experiment.spec
    budget = str(spec.budget)
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
        f"- each variant against its baseline task by task (the per-task rule) and over tasks (the verdict); the "
        f"paper's tie rule beside them (a tie when |delta| <= {spec.tie_tolerance:g} on the means over seeds)",
        "- variants:",
    ]
    for v in experiment.variants:
        role = "baseline" if v.baseline is None else f"vs {v.baseline}"
        plan = experiment.runs_of(v.name)[0]
        lines.append(f"  - **{v.name}** ({role}): `{v.source}`, {encoder_text(plan)}, seeds {', '.join(map(str, v.seeds))}; "
                     f"{objectives_text(plan)}")
    if experiment.base is not None:
        lines.append(_base_line(experiment, next(r for r in runs if r.plan == experiment.base)))
    lines.append(f"- learning control: each encoder shape untrained, seeds {', '.join(map(str, spec.seeds))} "
                 f"(`{experiment.output / 'controls'}`)")
    lines.append(_duration_line(read_invocations(experiment)))
    lines += matching_lines(experiment, runs)
    missing = [r.plan.label for r in runs if r.done is None]
    unprobed = [r.plan.label for r in runs if r.done is not None and r.probe is None]
    if missing:
        lines.append(f"- **not trained yet**: {', '.join(missing)}")
    if unprobed:
        lines.append(f"- **not probed**: {', '.join(unprobed)}")
    return lines


NOT_LEARNED = "no verdict: its latent term did not learn"


def _duration_line(invocations: list[dict]) -> str:
    """How long the experiment took: the wall time of every invocation that did work, summed."""
    working = [i for i in invocations if any(i.get(k) for k in ("trained", "resumed", "probed", "read_out"))]
    if not working:
        return "- measured duration: not recorded (no invocation that trained, probed or read out has ended)"
    minutes = sum(i["seconds"] for i in working) / 60
    notes = sorted({i["note"] for i in working if i.get("note")})
    return (f"- measured duration: **{minutes:.0f} min** of wall time over {len(working)} invocation"
            f"{'s' * (len(working) > 1)} of `protjepa experiment` (from {working[0]['started']} to "
            f"{working[-1]['ended']}), training, probing and reading out included"
            + "".join(f"; {note}" for note in notes))


BASE_START = "base (start)"


def control_comparisons(experiment: Experiment, scores: dict[str, VariantScores], base: RunData | None,
                        random: VariantScores, shape: str) -> dict[str, ArmComparison]:
    """The base (when variants of ``shape`` continue from it) and every variant of ``shape``
    against ``random``, its random init, under the per-task rule (seed noise pooled over them all).
    A run from scratch pairs with the random init of its seed (its initial weights); the base and
    a continued run share nothing with it."""
    trained = []
    if base is not None and base.probe is not None and any(v.from_base and v.shape == shape
                                                            for v in experiment.variants):
        trained.append(VariantRuns(BASE_START, [base.probe], [base.plan.seed]))
    trained += [runs_of(v) for name, v in scores.items() if experiment.variant(name).shape == shape]
    continued = frozenset([BASE_START] + [v.name for v in experiment.variants if v.from_base])
    return compare_family(runs_of(random), trained, experiment.spec.tie_tolerance, unpaired=continued)


def _learning_control(experiment: Experiment, scores: dict[str, VariantScores], base: RunData | None,
                      controls: dict[str, VariantScores]) -> list[str]:
    """Per encoder shape: the base and every variant of that shape against its random init, under the per-task rule."""
    lines = ["## Learning control: against random init", "",
             "The same encoder shape, built with each experiment seed and never trained "
             "(`controls/random_init_<shape>/seed<k>/`), probed like the runs. Random init: mean ± std over its "
             "seeds. Each trained cell: its mean over seeds, the delta to random init and the outcome under the "
             "per-task rule (seed noise pooled over the random inits and the runs of the shape; seed k of a run "
             "from scratch pairs with random init k, its initial weights; a continued run and the base are "
             "compared unpaired)."]
    for shape, random in controls.items():
        lines += ["", f"### {random.name}", ""]
        if not random.probed:
            lines.append("Not probed yet.")
            continue
        comps = control_comparisons(experiment, scores, base, random, shape)
        trained = list(comps)
        lines += [f"| task | metric | random init (seeds {', '.join(map(str, random.seeds))}) | "
                  + " | ".join(trained) + " |", "|---|---|---:|" + "---:|" * len(trained)]
        for task, result in random.mean["tasks"].items():
            cells = []
            for comp in comps.values():
                row = next((r for r in comp.rows if r.task == task), None)
                cells.append("n/a" if row is None else f"{row.a.mean:.4f} ({row.delta:+.4f}, {row.outcome})")
            spread_cell = next((str(r.b) for c in comps.values() for r in c.rows if r.task == task),
                               _fmt(result["value"]))
            lines.append(f"| {task} | {result['metric']} | {spread_cell} | " + " | ".join(cells) + " |")
        lines.append("| **W / L / T (per-task rule)** | | | " + " | ".join(f"**{wlt(c)}**" for c in comps.values())
                     + " |")
        lines.append("")
        for name, comp in comps.items():
            wins, tasks = comp.count("W"), len(comp.rows)
            verdict = "beats" if wins > tasks / 2 else "does **not** beat"
            untested = sum(not r.testable for r in comp.rows)
            lines.append(f"- **{name}** {verdict} random init on most tasks beyond noise: {wins} of {tasks} "
                         f"tasks won under the per-task rule" + (f" ({untested} without measured seed noise: "
                                                                "ties)" if untested else ""))
    return lines


def _budget_table(runs: list[RunData]) -> list[str]:
    lines = ["## Budget used", "",
             "Training clock counts only training steps (the budget's wall-clock); tokens are non-padding residues; "
             "FLOPs are model matmul FLOPs (docs/recipes.md, budget).",
             "", "| run | steps | tokens | FLOPs | training clock (s) | tokens/s | final loss | held-out MLM loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        s = run.summary
        if not s.get("steps"):
            state = "pretrained, not recorded" if run.done else "not trained yet"
            lines.append(f"| {run.plan.label} | {state} | | | | | | |")
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


def _notes(runs: list[RunData], tasks: list[str]) -> list[str]:
    """Each of ``tasks``' probe notes (subsampling, splits, leakage) and errors, once per distinct text
    (a shared base may hold results of tasks another experiment probed)."""
    notes: dict[str, list[str]] = {}
    for run in runs:
        for task, result in ((run.probe or {}).get("tasks") or {}).items():
            if task not in tasks:
                continue
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
           comps: dict[str, Comparison], plots: list[Path], base: RunData | None = None,
           controls: dict[str, VariantScores] | None = None, seeds: FamilyStatistics | None = None) -> str:
    seeds = seeds or seed_statistics(scores, comps, experiment.spec.tie_tolerance)
    trained = ([base] if base is not None else []) + runs
    latents = variant_latents(runs, {v.name: v.baseline for v in experiment.variants})
    sections = [_header(experiment, trained)]
    if comps:
        not_learned = {name: NOT_LEARNED for name, latent in latents.items() if latent.has_latent_term
                       and not latent.learned}
        sections.append(verdict_section(seeds, not_learned, f" A variant whose latent term did not beat a constant "
                                        f"prediction in every seed gets *{NOT_LEARNED}* (see *Latent term against a "
                                        "constant*)."))
    if latents:
        sections.append(latent_section(latents))
    if comps:
        sections.append(task_tables(seeds))
    else:
        sections.append(["## Per-task results", "", "No variant and its baseline are both probed yet."])
    sections += [_learning_control(experiment, scores, base, controls or {}), _budget_table(trained),
                 _collapse_table(trained), statistics_section(seeds) if comps else ["## Seeds and statistics", "",
                                                                                  "Nothing compared yet."],
                 _notes(trained, [t.name for t in experiment.tasks])]
    if plots:
        sections.append(["## Plots", ""] + [f"![{p.stem}]({PLOTS}/{p.name})" for p in plots])
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def _gather(experiment: Experiment) -> tuple:
    """What the report is made of, read from disk once: runs, scores, comparisons, base, controls."""
    runs = collect(experiment)
    scores = variant_scores(experiment, runs)
    base = run_data(experiment.base) if experiment.base is not None else None
    return runs, scores, comparisons(experiment, scores), base, collect_controls(experiment)


def report_text(experiment: Experiment, plots: list[Path]) -> str:
    """The report's Markdown, from what the runs left on disk; ``plots``: the PNGs it shows."""
    runs, scores, comps, base, controls = _gather(experiment)
    return render(experiment, runs, scores, comps, plots, base, controls)


def write_report(experiment: Experiment) -> Path:
    runs, scores, comps, base, controls = _gather(experiment)
    folder = experiment.output / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    plots = [plot_losses(runs, experiment, folder / "loss_curves.png"),
             plot_collapse(runs, experiment, folder / "collapse.png")]
    seeds = seed_statistics(scores, comps, experiment.spec.tie_tolerance)
    if comps:
        plots.append(plot_deltas(seeds.comparisons, experiment, folder / "deltas.png"))
    for shape, random in controls.items():
        if random.probed:
            plots.append(plot_deltas(control_comparisons(experiment, scores, base, random, shape), experiment,
                                     folder / f"control_{shape}.png", f"per-task deltas to {random.name}"))
    path = experiment.output / REPORT
    path.write_text(render(experiment, runs, scores, comps, [p for p in plots if p is not None], base, controls,
                           seeds))
    return path
