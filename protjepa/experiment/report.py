"""The experiment report: Markdown that reads on a repository page, and its PNG plots.

Everything is read back from the run directories (``done`` markers, ``metrics.jsonl``,
``probe/results.json``), so the report can be rewritten at any time and shows whatever is
finished. Each variant is compared with its baseline on the mean over its seeds of each
task's main metric, twice: under the paper's rule (a tie within the experiment's tie
tolerance, :mod:`protjepa.evaluation.compare`) and under the noise rule, which also calls a
tie any delta within the seed noise; the verdict needs the noise rule's sign test and a
paired test over seeds to agree (:mod:`protjepa.evaluation.seed_stats`).

The learning control sets every variant, and the base of a continued-pretraining experiment,
against the random-init encoder of its shape (probed the same way, one per experiment seed),
under the same noise rule: a run that does not beat it on most tasks has not shown that it learned.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import yaml
from pathlib import Path

from protjepa.evaluation.compare import Comparison, compare
from protjepa.evaluation.seed_stats import (
    ALPHA,
    NullSummary,
    SeededComparison,
    SeedNoise,
    compare_seeds,
    minimal_detectable_effect,
    null_summary,
    seed_pairs,
    seed_scores,
    task_noise,
)
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


@dataclass
class SeedStatistics:
    noise: dict[str, SeedNoise]  # per task, pooled over every variant
    comparisons: dict[str, SeededComparison]  # variant -> against its baseline
    null: dict[str, NullSummary]  # variant with two seeds or more -> its seeds against each other


def seed_statistics(scores: dict[str, VariantScores], comps: dict[str, Comparison], tie: float) -> SeedStatistics:
    by_seed = {name: seed_scores(v.probed, v.seeds) for name, v in scores.items()}
    noise = task_noise(by_seed.values())
    seeded = {name: compare_seeds(c, by_seed[name], by_seed[c.name_b], noise) for name, c in comps.items()}
    null = {name: null_summary(seed_pairs(name, v.probed, v.seeds, tie))
            for name, v in scores.items() if len(v.probed) > 1}
    return SeedStatistics(noise, seeded, null)


NOISE_RULE = (
    "**Noise rule.** A task's seed noise s is the pooled within-variant sample std of its score over "
    "every variant with two seeds or more (variances weighted by n - 1). A delta of means over seeds "
    "counts as a win or a loss only when |delta| > the tie tolerance **and** |delta| > 2 s sqrt(1/n_a + 1/n_b) "
    "(twice the standard error of the difference of two means, about a 95% band); otherwise it is a tie. "
    "Where no variant has two seeds on a task (marked †) the tie tolerance alone decides. The one-sided "
    "sign test (ties left out) runs on the wins and losses counted this way; the paper's rule (the tie "
    "tolerance alone) is shown beside it for comparison with the paper."
)
PAIRED_RULE = (
    "**Paired test.** Seed k of the variant against seed k of its baseline on every task (the seeds both "
    "have), each delta divided by its task's s so that tasks weigh alike; Wilcoxon signed-rank test. "
    "The (task, seed) pairs of one seed share a model, so they are not independent: its p is optimistic."
)
VERDICT_RULE = (
    f"**Verdict.** *win* when the noise rule's sign test p < {ALPHA:g} and the paired one-sided p < {ALPHA:g} "
    "(variant better); *loss* when both say worse; otherwise *not separable from noise*."
)


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
    budget = str(base.plan.recipe.budget)
    used = (f"it ran {base.summary['steps']} steps, {base.summary['tokens']:,} tokens" if base.done
            else "not trained yet")
    scratch = [v.name for v in experiment.variants if not v.from_base]
    who = "every variant starts" if not scratch else \
        f"every variant but {', '.join(scratch)} (from scratch) starts"
    return (f"- continued pretraining: {who} from the final weights (encoder and LM head) of the "
            f"**base**, `{experiment.base_source}`, {encoder_text(base.plan)}, budget **{budget}**, seed "
            f"{base.plan.seed} ({used}; `{base.plan.run_dir}`); the variants' budget is their own")


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
        f"- a tie when |delta| <= {spec.tie_tolerance:g}; each variant is scored by the mean over its seeds",
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


def _verdicts(seeded: dict[str, SeededComparison], latents: dict[str, VariantLatent]) -> list[str]:
    lines = ["## Verdicts", "",
             "| variant | vs | tie rule W / L / T | tie rule sign p, better / worse | noise rule W / L / T "
             "| noise rule sign p, better / worse | paired p, one-sided (two-sided; pairs) | verdict |",
             "|---|---|:---:|---:|:---:|---:|---:|---|"]
    for name, s in seeded.items():
        c = s.means
        paired = s.paired
        latent = latents.get(name)
        verdict = NOT_LEARNED if latent and latent.has_latent_term and not latent.learned else s.verdict
        lines.append(f"| {name} | {c.name_b} | {_wlt(c)} | {_p(c)} | {_wlt(s)} | {_p(s)} | "
                     f"{paired.greater:.4g} ({paired.two_sided:.4g}; {paired.n}) | {verdict} |")
    lines += ["", VERDICT_RULE + " A variant whose latent term did not beat a constant prediction in every seed "
              f"gets *{NOT_LEARNED}* (see *Latent term against a constant*). The rules: see *Seeds and statistics* "
              "below."]
    left_out = {name: s.paired.left_out for name, s in seeded.items() if s.paired.left_out}
    lines += [""] * bool(left_out) + [f"- {name}: paired test without {', '.join(tasks)} (no seed noise measured)"
                                      for name, tasks in left_out.items()]
    return lines


def _wlt(c: Comparison | SeededComparison) -> str:
    return f"{c.count('W')} / {c.count('L')} / {c.count('T')}"


def _p(c: Comparison | SeededComparison) -> str:
    """The two one-sided sign tests: that the variant is better, that it is worse."""
    return f"{c.p_value:.4g} / {c.p_worse:.4g}"


def _task_tables(seeded: dict[str, SeededComparison]) -> list[str]:
    """One table per baseline: tasks down, the baseline then each variant across."""
    lines = ["## Per-task results", "",
             "Each cell: mean ± sample std over the variant's seeds, the delta of means to the baseline and "
             "the outcome under the noise rule († no seed noise measured: the tie rule alone)."]
    for baseline in dict.fromkeys(s.means.name_b for s in seeded.values()):
        variants = [name for name, s in seeded.items() if s.means.name_b == baseline]
        rows = {name: {r.row.task: r for r in seeded[name].rows} for name in variants}
        tasks = list(dict.fromkeys(task for name in variants for task in rows[name]))
        lines += ["", f"### Against {baseline}", "",
                  f"| task | metric | {baseline} | " + " | ".join(variants) + " |",
                  "|---|---|---:|" + "---:|" * len(variants)]
        for task in tasks:
            first = next(rows[name][task] for name in variants if task in rows[name])
            cells = []
            for name in variants:
                row = rows[name].get(task)
                cells.append("n/a" if row is None else
                             f"{row.a} ({row.row.delta:+.4f}, {row.outcome(seeded[name].means.tie)}"
                             + ("†" if row.band is None else "") + ")")
            lines.append(f"| {task} | {first.row.metric} | {first.b} | " + " | ".join(cells) + " |")
        totals = [("W / L / T, noise rule", lambda c: f"**{_wlt(c)}**"),
                  ("sign test p, better / worse, noise rule", _p),
                  ("W / L / T, tie rule", lambda c: _wlt(c.means)),
                  ("sign test p, better / worse, tie rule", lambda c: _p(c.means))]
        lines += [f"| **{label}** | | | " + " | ".join(cell(seeded[n]) for n in variants) + " |"
                  for label, cell in totals]
        unmatched = [f"{n}: {why}" for n in variants for why in seeded[n].means.unmatched]
        warnings = sorted({w for n in variants for w in seeded[n].means.warnings})
        lines += [""] * bool(unmatched or warnings) + [f"- not compared: {u}" for u in unmatched]
        lines += [f"- warning: {w}" for w in warnings]
    return lines


BASE_START = "base (start)"


def control_comparisons(experiment: Experiment, scores: dict[str, VariantScores], base: RunData | None,
                        random: VariantScores, shape: str) -> dict[str, SeededComparison]:
    """The base (when variants of ``shape`` continue from it) and every variant of ``shape``
    against ``random``, its random init, under the noise rule (seed noise pooled over them all)."""
    tie = experiment.spec.tie_tolerance
    trained = {}
    if base is not None and base.probe is not None and any(v.from_base and v.shape == shape
                                                            for v in experiment.variants):
        trained[BASE_START] = VariantScores(BASE_START, None, [base.probe], [base.plan.seed])
    trained |= {name: v for name, v in scores.items() if experiment.variant(name).shape == shape}
    by_seed = {name: seed_scores(v.probed, v.seeds) for name, v in trained.items()}
    random_by_seed = seed_scores(random.probed, random.seeds)
    noise = task_noise([random_by_seed, *by_seed.values()])
    return {name: compare_seeds(compare(v.mean, random.mean, tie, name, random.name), by_seed[name],
                                random_by_seed, noise)
            for name, v in trained.items()}


def _learning_control(experiment: Experiment, scores: dict[str, VariantScores], base: RunData | None,
                      controls: dict[str, VariantScores]) -> list[str]:
    """Per encoder shape: the base and every variant of that shape against its random init, under the noise rule."""
    tie = experiment.spec.tie_tolerance
    lines = ["## Learning control: against random init", "",
             "The same encoder shape, built with each experiment seed and never trained "
             "(`controls/random_init_<shape>/seed<k>/`), probed like the runs. Random init: mean ± std over its "
             "seeds. Each trained cell: its mean over seeds, the delta to random init and the outcome under the "
             "noise rule (seed noise pooled over the random inits and the runs of the shape)."]
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
                row = next((r for r in comp.rows if r.row.task == task), None)
                cells.append("n/a" if row is None else
                             f"{row.a.mean:.4f} ({row.row.delta:+.4f}, {row.outcome(tie)})")
            spread_cell = next((str(r.b) for c in comps.values() for r in c.rows if r.row.task == task),
                               _fmt(result["value"]))
            lines.append(f"| {task} | {result['metric']} | {spread_cell} | " + " | ".join(cells) + " |")
        lines.append("| **W / L / T (noise rule)** | | | " + " | ".join(
            f"**{c.count('W')} / {c.count('L')} / {c.count('T')}**" for c in comps.values()) + " |")
        lines.append("")
        for name, comp in comps.items():
            wins, tasks = comp.count("W"), len(comp.rows)
            verdict = "beats" if wins > tasks / 2 else "does **not** beat"
            unmeasured = sum(r.band is None for r in comp.rows)
            lines.append(f"- **{name}** {verdict} random init on most tasks beyond seed noise: {wins} of {tasks} "
                         f"tasks won under the noise rule" + (f" ({unmeasured} without measured seed noise: "
                                                              "tie rule)" if unmeasured else ""))
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


def _seed_statistics(seeds: SeedStatistics) -> list[str]:
    lines = ["## Seeds and statistics", "", NOISE_RULE, "", PAIRED_RULE, ""]
    measured = {task: n for task, n in seeds.noise.items() if n.std is not None}
    if not measured:
        return lines + ["No variant has two probed seeds on any task: seed noise is not measured, and every "
                        "outcome above is the tie rule's alone."]
    lines += ["s: the task's seed noise (df: its degrees of freedom). MDE: the smallest true difference of means "
              f"a two-sided t-test at alpha {ALPHA:g} detects with 80% power, "
              "(t_{0.975,df} + t_{0.80,df}) s sqrt(2/n), with n the fewest seeds of any compared variant on the task. "
              "A largest |delta| below the MDE is one these seeds could not have told from noise.", "",
              "| task | s | df | n | MDE | largest abs delta (variant) |", "|---|---:|---:|---:|---:|---|"]
    for task, noise in seeds.noise.items():
        mine = [(name, r) for name, s in seeds.comparisons.items() for r in s.rows if r.row.task == task]
        if noise.std is None:
            lines.append(f"| {task} | n/a † | 0 | | | |")
            continue
        largest = max(mine, key=lambda m: abs(m[1].row.delta), default=None)
        n = min((min(r.a.n, r.b.n) for _, r in mine), default=None)
        mde = minimal_detectable_effect(noise, n) if n else None
        lines.append(f"| {task} | {noise.std:.4f} | {noise.df} | {n or ''} | {_fmt(mde)} | "
                     + (f"{abs(largest[1].row.delta):.4f} ({largest[0]})" if largest else "") + " |")
    lines += ["", "**Seed against seed.** Every pair of one variant's seeds compared task by task under the paper's "
              "tie rule (each pair turned so that the seed with more wins is A): the same recipe, so any "
              "lopsided count is noise. How often would the paper's rule report a win between two seeds?", ""]
    if not seeds.null:
        lines.append("- no variant has two probed seeds")
    for name, null in seeds.null.items():
        lines.append(f"- **{name}**: {null.pairs} pair{'s' * (null.pairs > 1)}, on average {null.wins:.3g} W / "
                     f"{null.losses:.3g} L / {null.ties:.3g} T; smallest sign test p {null.smallest_p:.3g}; "
                     f"{null.below_alpha} of {null.pairs} with p < {ALPHA:g}")
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
           controls: dict[str, VariantScores] | None = None) -> str:
    seeds = seed_statistics(scores, comps, experiment.spec.tie_tolerance)
    trained = ([base] if base is not None else []) + runs
    latents = variant_latents(runs, {v.name: v.baseline for v in experiment.variants})
    sections = [_header(experiment, trained)]
    if comps:
        sections.append(_verdicts(seeds.comparisons, latents))
    if latents:
        sections.append(latent_section(latents))
    if comps:
        sections.append(_task_tables(seeds.comparisons))
    else:
        sections.append(["## Per-task results", "", "No variant and its baseline are both probed yet."])
    sections += [_learning_control(experiment, scores, base, controls or {}), _budget_table(trained),
                 _collapse_table(trained), _seed_statistics(seeds),
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
    if comps:
        seeded = seed_statistics(scores, comps, experiment.spec.tie_tolerance).comparisons
        plots.append(plot_deltas(seeded, experiment, folder / "deltas.png"))
    for shape, random in controls.items():
        if random.probed:
            plots.append(plot_deltas(control_comparisons(experiment, scores, base, random, shape), experiment,
                                     folder / f"control_{shape}.png", f"per-task deltas to {random.name}"))
    path = experiment.output / REPORT
    path.write_text(render(experiment, runs, scores, comps, [p for p in plots if p is not None], base, controls))
    return path
