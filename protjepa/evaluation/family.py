"""A verdict table as one family: the statistics of every arm against its baseline, and their
Markdown, shared by ``protjepa compare`` and the experiment report (:mod:`protjepa.evaluation.verdicts`
holds the tests, :mod:`protjepa.evaluation.calibration` the simulated false-positive rates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

from protjepa.evaluation.calibration import Design, Rates, simulate
from protjepa.evaluation.compare import Comparison
from protjepa.evaluation.seed_stats import ALPHA, TaskTest, VariantRuns
from protjepa.evaluation.verdicts import (
    BOOTSTRAP,
    RUN_GATE,
    ArmComparison,
    NullSummary,
    adjust_family,
    compare_family,
    seed_nulls,
    sign_test_size,
)


@dataclass
class FamilyStatistics:
    comparisons: dict[str, ArmComparison]  # variant -> against its baseline; Holm over the whole table
    null: dict[str, NullSummary]  # variant with two seeds or more -> its seeds against each other
    verdict_rates: Rates  # the design simulated with true per-task effects that average zero
    task_rates: Rates  # the design simulated with no true effect (the per-task rule's false positives)
    design: Design


def test_noise_ratio(comps: dict[str, ArmComparison]) -> float:
    """The median test-set standard error of a task's delta, in units of its seed noise s (0 where
    no test-set noise is measured): what the simulated design adds as test-set noise."""
    ratios = [r.se_test / r.se_seeds * math.sqrt(r.paired or 1) for c in comps.values() for r in c.rows
              if r.se_test is not None and r.se_seeds]
    return float(np.median(ratios)) if ratios else 0.0


def family_statistics(variants: dict[str, VariantRuns], arms: dict[str, str], tie: float) -> FamilyStatistics:
    """Every arm (``arms``: variant -> its baseline) against its baseline, the whole table one
    family (Holm); seed noise pooled over every variant; each variant's seeds against each other;
    and the design simulated (the rates the report states)."""
    seeded: dict[str, ArmComparison] = {}
    for baseline in dict.fromkeys(arms.values()):
        mine = [variants[name] for name, b in arms.items() if b == baseline]
        others = [v for v in variants.values() if v.name != baseline and v not in mine]
        seeded |= compare_family(variants[baseline], mine, tie, pooled=others)
    adjust_family(seeded)
    design = Design(tasks=max((len(c.rows) for c in seeded.values()), default=1),
                    seeds=min((len(v.seeds) for v in variants.values()), default=1),
                    arms=max(len(seeded), 1), test_noise=test_noise_ratio(seeded))
    simulated = design.seeds > 1 and design.tasks > 1
    return FamilyStatistics(seeded, seed_nulls(list(variants.values()), tie),
                            simulate(design) if simulated else None,
                            simulate(replace(design, task_spread=0.0)) if simulated else None, design)


def pct(rate: float | None) -> str:
    return "n/a" if rate is None or rate != rate else f"{100 * rate:.1f}%"


def verdict_rule(seeds: FamilyStatistics) -> str:
    """What the verdict column means: the test, its unit of replication, its level, its simulated rate."""
    d, rates = seeds.design, seeds.verdict_rates
    family = len(seeds.comparisons)
    smallest = min(1.0, family * 2 / 2**d.tasks)
    text = (f"**Verdict.** Test: the Wilcoxon signed-rank test over the tasks of each task's standardized delta "
            f"(the mean over its paired seeds of delta / s, s the task's seed noise), two-sided. Unit of "
            f"replication: the task ({d.tasks} tasks; a task's seeds are averaged, not counted as replicates). "
            f"Level: {ALPHA:g} family-wise over the {family} arm{'s' * (family > 1)} of this table, which "
            f"{'share' if family > 1 else 'has'} one baseline (Holm's adjustment of their p). *win* / *loss*: "
            f"adjusted p < {ALPHA:g}, by the side the ranks lean to, and no seed effect common to the tasks "
            f"(the run-effect F-test over the tasks x seeds table, p >= {RUN_GATE:g}: a run better on every task at "
            "once would make the tasks dependent); otherwise *not separable from noise*.")
    if rates is not None:
        text += (f" Simulated A/A experiments of this design ({rates.simulations:,} experiments of {d.tasks} tasks, "
                 f"{d.seeds} paired seeds, {d.arms} arm{'s' * (d.arms > 1)}, true per-task effects that average "
                 f"zero, a run component of {d.run_share:.0%} of a delta's variance; "
                 f"`protjepa.evaluation.calibration`): the verdict calls {pct(rates.verdict)} of arms a win or a "
                 f"loss, the family {pct(rates.family)} of experiments.")
    if smallest >= ALPHA:
        text += (f" With {d.tasks} tasks and {family} arms the smallest adjusted p possible is {smallest:.3g}: no "
                 "verdict can be a win or a loss here.")
    return text




def interval_text(c: ArmComparison) -> str:
    low, high = c.across.interval
    return f"{c.across.mean:+.2f} [{low:+.2f}, {high:+.2f}]" if c.across.z else "n/a"




def verdict_section(seeds: FamilyStatistics, overrides: dict[str, str] | None = None, extra: str = "") -> list[str]:
    lines = ["## Verdicts", "",
             "| variant | vs | tasks | mean standardized delta [95% interval] | Wilcoxon p (Holm) | sign + / - (p) "
             "| per-task rule W / L / T | tie rule W / L / T (sign p, better / worse) | verdict |",
             "|---|---|---:|---:|---:|---:|:---:|:---:|---|"]
    for name, c in seeds.comparisons.items():
        verdict = (overrides or {}).get(name, c.verdict)
        a = c.across
        lines.append(f"| {name} | {c.baseline} | {len(a.z)} | {interval_text(c)} | {a.wilcoxon:.3g} ({c.adjusted:.3g}) | "
                     f"{a.positive} / {a.negative} ({a.sign:.3g}) | {wlt(c)} | {wlt(c.means)} ({tie_rule_p(c.means)}) | "
                     f"{verdict} |")
    d = seeds.design
    lines += ["", verdict_rule(seeds) + extra, "",
              f"**Interval.** A two-level bootstrap of the mean standardized delta (tasks drawn with replacement, "
              f"then each drawn task's seeds; {BOOTSTRAP:,} draws), 95% expanded percentile interval.", "",
              f"**Sign test.** The tasks' standardized deltas above / below 0, two-sided exact binomial test; unit of "
              f"replication: the task. A discrete test: over {d.tasks} tasks it can reject at "
              f"{pct(sign_test_size(d.tasks))} at most, not {ALPHA:g}"
              + (f" (simulated: {pct(seeds.verdict_rates.sign)})." if seeds.verdict_rates else "."), "",
              "**Per-task rule** (W / L / T): see *Seeds and statistics*. **Tie rule**: the paper's, on the means "
              "over seeds (|delta| <= the tie tolerance is a tie), with its one-sided sign tests, for comparison "
              "with the paper; it ignores the noise."]
    notes = {name: [c.verdict_note, c.test_note, *c.notes] for name, c in seeds.comparisons.items()}
    left_out = {name: c.across.left_out for name, c in seeds.comparisons.items() if c.across.left_out}
    lines += [""] + [f"- {name}: {'; '.join(n for n in found if n)}" for name, found in notes.items()]
    lines += [f"- {name}: standardized deltas without {', '.join(tasks)} (no seed noise measured)"
              for name, tasks in left_out.items()]
    return lines




def wlt(c: Comparison | ArmComparison) -> str:
    return f"{c.count('W')} / {c.count('L')} / {c.count('T')}"


def tie_rule_p(c: Comparison) -> str:
    """The two one-sided sign tests of the tie rule: that the variant is better, that it is worse."""
    return f"{c.p_value:.4g} / {c.p_worse:.4g}"


def task_cell(row: TaskTest) -> str:
    """``mean ± std (delta, p, outcome)`` of one task under the per-task rule († no seed noise to test)."""
    if not row.testable:
        return f"{row.a} ({row.delta:+.4f}, T†)"
    return f"{row.a} ({row.delta:+.4f}, p {row.p:.2g}, {row.outcome})"


def task_tables(seeds: FamilyStatistics) -> list[str]:
    """One table per baseline: tasks down, the baseline then each variant across."""
    comps = seeds.comparisons
    lines = ["## Per-task results", "",
             "Each cell: mean ± sample std over the variant's seeds, then the delta to the baseline (paired: the mean "
             "of the seeds' deltas), the per-task rule's two-sided p and its outcome († no seed noise to test with: "
             "a tie)."]
    for baseline in dict.fromkeys(c.baseline for c in comps.values()):
        variants = [name for name, c in comps.items() if c.baseline == baseline]
        rows = {name: {r.task: r for r in comps[name].rows} for name in variants}
        tasks = list(dict.fromkeys(task for name in variants for task in rows[name]))
        lines += ["", f"### Against {baseline}", "",
                  f"| task | metric | {baseline} | " + " | ".join(variants) + " |",
                  "|---|---|---:|" + "---:|" * len(variants)]
        for task in tasks:
            first = next(rows[name][task] for name in variants if task in rows[name])
            cells = ["n/a" if task not in rows[name] else task_cell(rows[name][task]) for name in variants]
            lines.append(f"| {task} | {first.metric} | {first.b} | " + " | ".join(cells) + " |")
        lines.append("| **W / L / T, per-task rule** | | | " + " | ".join(f"**{wlt(comps[n])}**" for n in variants)
                     + " |")
        unmatched = [f"{n}: {why}" for n in variants for why in comps[n].means.unmatched]
        warnings = sorted({w for n in variants for w in comps[n].means.warnings})
        lines += [""] * bool(unmatched or warnings) + [f"- not compared: {u}" for u in unmatched]
        lines += [f"- warning: {w}" for w in warnings]
    return lines




def mde_cell(rows: list[TaskTest]) -> str:
    """The per-task rule's minimal detectable effect on a task, over the arms (a range when they differ),
    for the benchmark when test-set noise is counted, for the scored subsample otherwise."""
    mdes = [r.mde for r in rows if r.mde is not None]
    if not mdes:
        return "n/a"
    basis = "benchmark" if all(r.se_test is not None for r in rows if r.mde is not None) else "subsample"
    low, high = min(mdes), max(mdes)
    return (f"{low:.4f}" if f"{low:.4f}" == f"{high:.4f}" else f"{low:.4f}-{high:.4f}") + f" ({basis})"


def statistics_section(seeds: FamilyStatistics) -> list[str]:
    comps = seeds.comparisons
    lines = ["## Seeds and statistics", "",
             "**Per-task rule.** Test: with two seeds in common or more, a paired t-test over the seeds' deltas "
             "(seed k of the variant against seed k of its baseline: they share the data order), two-sided; "
             "otherwise a two-sample t-test on the task's seed noise s (the pooled within-variant sample std over "
             "every variant with two seeds or more). Where the probes kept each test example's output, the "
             "variance of the delta that resampling the test examples gives (a bootstrap of 1,000 draws, alike for "
             "every run) adds to the seeds' (Welch-Satterthwaite degrees of freedom): the question is then the "
             "benchmark, not the scored subsample. Unit of replication: the seed (and the test example, where "
             f"counted). Level: {ALPHA:g} per task; a win or a loss also needs |delta| beyond the metric's "
             "resolution (one test example for an accuracy or a recall; 0 for rank metrics)."]
    if seeds.task_rates is not None:
        d = seeds.design
        lines[-1] += (f" Simulated A/A experiments of this design ({d.seeds} paired seeds"
                      + (f", test-set noise {d.test_noise:.2g} s" if d.test_noise else "")
                      + f"): it calls {pct(seeds.task_rates.per_task)} of tasks a win or a loss; over "
                      f"{d.tasks} tasks, about {seeds.task_rates.per_task * d.tasks:.1f} false W or L a column.")
        if not d.test_noise:
            lines[-1] += (" Without test-set noise counted, a task's W / L may be its scored subsample's: on the "
                          "benchmark such a rule would call more.")
    lines += ["", "MDE: the smallest true delta the per-task rule finds with 80% power, (t_{0.975,df} + t_{0.80,df}) "
              "x its standard error (a range over the arms).", "",
              "| task | s | df | resolution | MDE | largest abs delta (variant) |", "|---|---:|---:|---:|---:|---|"]
    tasks = list(dict.fromkeys(r.task for c in comps.values() for r in c.rows))
    for task in tasks:
        mine = [(name, r) for name, c in comps.items() for r in c.rows if r.task == task]
        first = mine[0][1]
        largest = max(mine, key=lambda m: abs(m[1].delta))
        noise = comps[mine[0][0]].noise[task]
        std = "n/a †" if noise.std is None else f"{noise.std:.4f}"
        lines.append(f"| {task} | {std} | {noise.df} | {first.tie:.4g} | {mde_cell([r for _, r in mine])} | "
                     f"{abs(largest[1].delta):.4f} ({largest[0]}) |")
    lines += ["", "**Seed against seed.** Every pair of one variant's seeds under the per-task rule (a two-sample "
              "test, one run against one, on the seed noise of the other variants): the same recipe, so every W or "
              f"L is a false positive, expected at {ALPHA:.0%}. One seed against one gets no verdict over tasks: "
              "with one run a side, a seed's luck common to its tasks cannot be told from the recipe.", ""]
    if not seeds.null:
        lines.append("- no variant has two probed seeds")
    for name, null in seeds.null.items():
        lines.append(f"- **{name}**: {null.pairs} pair{'s' * (null.pairs > 1)}; per-task rule: {null.rejected} of "
                     f"{null.tests} tests reject ({pct(null.rate)})")
    total = sum(n.tests for n in seeds.null.values())
    if total:
        rejected = sum(n.rejected for n in seeds.null.values())
        lines.append(f"- all variants: {rejected} of {total} per-task tests reject ({pct(rejected / total)})")
    return lines


def family_markdown(stats: FamilyStatistics) -> str:
    """``protjepa compare`` over seeds: the verdicts, the per-task tables and the statistics."""
    names = ", ".join(stats.comparisons)
    baselines = ", ".join(dict.fromkeys(c.baseline for c in stats.comparisons.values()))
    sections = [[f"# {names} vs {baselines}, over seeds"], verdict_section(stats), task_tables(stats),
                statistics_section(stats)]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def plot_family(comparisons: dict[str, ArmComparison], path: str | Path, title: str = "per-task deltas to the baseline",
                colours: dict[str, str] | None = None) -> Path:
    """Per task, each arm's delta to its baseline in units of the task's seed noise s (tasks on one
    scale, as the verdict weighs them); whiskers: the per-task rule's 95% interval; hatched: its wins
    and losses. A task without seed noise has no bar."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    names = list(comparisons)
    tasks = list(dict.fromkeys(r.task for c in comparisons.values() for r in c.rows))
    height = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(tasks) * max(1, len(names) / 2) + 1.8))
    for i, name in enumerate(names):
        comparison = comparisons[name]
        present = [(t, row, comparison.noise[task].std) for t, task in enumerate(tasks)
                   for row in comparison.rows if row.task == task and comparison.noise[task].std]
        whiskers = [stats.t.ppf(0.975, row.df) * row.se / std for _, row, std in present]
        bars = ax.barh([t + i * height for t, _, _ in present], [row.delta / std for _, row, std in present],
                       height=height, xerr=whiskers if any(whiskers) else None,
                       color=(colours or {}).get(name, f"C{i % 10}"), label=f"{name} - {comparison.baseline}")
        for bar, (_, row, _) in zip(bars, present):
            if row.outcome != "T":
                bar.set_hatch("//")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks([t + 0.4 - height / 2 for t in range(len(tasks))], tasks)
    ax.invert_yaxis()
    ax.set(xlabel="delta / s (the task's seed noise); whiskers: 95% interval; hatched: W or L", title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
