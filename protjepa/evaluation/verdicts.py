"""Verdicts over the probe suite: whether a recipe beats its baseline across tasks.

The unit of replication is the **task**: a task's seeds share its test set, its probe and most of
its delta, so they are not independent draws of the comparison. Each task gives one number, its
standardized delta ``z``: the mean over the paired seeds of ``(A - B) / s`` (``s`` its seed noise,
:mod:`protjepa.evaluation.seed_stats`), so that tasks on different scales weigh alike. Over the
tasks:

- the **Wilcoxon signed-rank test** of the z's against 0, two-sided (exact for up to 50 tasks);
- the **sign test** of their signs, two-sided and exact (discrete: over 14 tasks its real level
  at a nominal 5% is 1.3%, :func:`sign_test_size`);
- a **two-level bootstrap** 95% interval of the mean z: tasks drawn with replacement, then each
  drawn task's seeds with replacement, ``BOOTSTRAP`` times;
- **several arms against one baseline** share its noise (their deltas correlate), so the verdict
  table is one family: Holm's step-down adjustment of the arms' Wilcoxon p;
- the **seeds' run effect**: the Wilcoxon treats the tasks as independent, which a run that is
  better or worse on every task at once (a seed's luck common to its tasks) breaks. An F-test of
  the seed main effect in the tasks x seeds table of standardized deltas checks it; where it finds
  one (p < ``RUN_GATE``) the tasks are not independent replicates, and no verdict is drawn;
- the **verdict**: *win* (*loss*) when the adjusted Wilcoxon p < ``ALPHA``, the ranks lean towards
  the arm (the baseline), and the run-effect check passes (it needs two paired seeds or more);
  otherwise *not separable from noise*.

:mod:`protjepa.evaluation.calibration` simulates A/A experiments through these functions and
shows each rule's false-positive rate.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from protjepa.evaluation.compare import Comparison, compare
from protjepa.evaluation.seed_stats import (
    ALPHA,
    SeedNoise,
    TaskTest,
    VariantRuns,
    mean_results,
    resolution,
    task_noise,
    task_test,
)

BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0  # the interval is drawn the same way each time a report renders
RUN_GATE = 0.10  # the run-effect check's level: kept the verdict's false positives near 5% in simulation
WIN, LOSS, NOT_SEPARABLE = "win", "loss", "not separable from noise"


# --------------------------------------------------------------------------- across tasks


@functools.cache
def _signed_rank_null(n: int) -> np.ndarray:
    """P(W+ <= w) for w = 0 .. n(n+1)/2 under the null (each rank's sign a fair coin): counted
    exactly by dynamic programming over the ranks."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return np.cumsum(counts) / 2.0**n


def wilcoxon_two_sided(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Wilcoxon signed-rank p of each row of ``z`` (``[..., T]``) against 0, and the side
    its ranks lean to (+1, -1; 0 when no value is left). Exact (the null distribution counted)
    for rows without zeros or tied magnitudes; others, zeros dropped, go to scipy."""
    z = np.asarray(z, dtype=np.float64)
    flat = z.reshape(-1, z.shape[-1])
    p, lean = np.ones(len(flat)), np.zeros(len(flat), dtype=int)
    magnitude = np.abs(flat)
    ranks = stats.rankdata(magnitude, axis=1)
    plain = (flat != 0).all(1) & (np.sort(magnitude, axis=1)[:, 1:] != np.sort(magnitude, axis=1)[:, :-1]).all(1)
    positive = np.where(flat > 0, ranks, 0).sum(1)
    negative = np.where(flat < 0, ranks, 0).sum(1)
    lean[:] = np.sign(positive - negative)
    n = flat.shape[1]
    if plain.any() and n:
        cdf = _signed_rank_null(n)
        w = positive[plain].astype(int)
        p[plain] = np.minimum(1.0, 2 * np.minimum(cdf[w], 1 - np.where(w > 0, cdf[w - 1], 0.0)))
    for row in np.flatnonzero(~plain):
        kept = flat[row][flat[row] != 0]
        if len(kept):
            p[row] = stats.wilcoxon(kept, alternative="two-sided").pvalue
    return p.reshape(z.shape[:-1]), lean.reshape(z.shape[:-1])


def sign_test_two_sided(positive: int, negative: int) -> float:
    """Two-sided exact sign test (ties left out): twice the smaller tail, at most 1."""
    n = positive + negative
    return min(1.0, 2 * float(stats.binom.cdf(min(positive, negative), n, 0.5))) if n else 1.0


def sign_test_size(tasks: int) -> float:
    """The sign test's real level over ``tasks`` signs at nominal ALPHA: the largest two-sided p
    below ALPHA that the counts can reach (a discrete test rejects less often than its nominal level)."""
    reachable = [p for k in range(tasks + 1) if (p := sign_test_two_sided(k, tasks - k)) < ALPHA]
    return max(reachable, default=0.0)


def two_level_interval(deltas: list[np.ndarray], resamples: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """A bootstrap interval of the mean over tasks of each task's mean standardized delta: tasks
    drawn with replacement, then each drawn task's seeds with replacement. The percentiles are
    expanded for the few tasks there are (Hesterberg's expanded percentile interval: the tails
    at the normal level matching ``sqrt(T / (T - 1)) t_{T-1}``), without which 14 tasks cover 92%."""
    width = max(len(d) for d in deltas)
    table = np.full((len(deltas), width), np.nan)
    for i, d in enumerate(deltas):
        table[i, :len(d)] = d
    counts = np.array([len(d) for d in deltas])
    rng = np.random.default_rng(seed)
    tasks = rng.integers(0, len(deltas), size=(resamples, len(deltas)))
    picks = (rng.random((resamples, len(deltas), width)) * counts[tasks][..., None]).astype(int)
    drawn = table[tasks[..., None], picks]  # [B, T, width]; columns past a task's seed count are ignored
    within = np.where(np.arange(width) < counts[tasks][..., None], drawn, 0.0).sum(2) / counts[tasks]
    means = within.mean(1)
    tail = (1 - level) / 2
    if len(deltas) > 1:
        widen = math.sqrt(len(deltas) / (len(deltas) - 1)) * stats.t.ppf(1 - tail, len(deltas) - 1)
        tail = float(stats.norm.sf(widen))
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def run_effect(table: np.ndarray) -> np.ndarray:
    """The F-test p of the seed main effect in each ``[..., tasks, seeds]`` table (two-way, one value
    a cell): small when a seed moves every task the same way."""
    tasks, seeds = table.shape[-2:]
    grand = table.mean((-2, -1), keepdims=True)
    by_task, by_seed = table.mean(-1, keepdims=True), table.mean(-2, keepdims=True)
    seed_square = tasks * np.square(by_seed - grand).sum((-2, -1)) / (seeds - 1)
    residual = np.square(table - by_task - by_seed + grand).sum((-2, -1)) / ((tasks - 1) * (seeds - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(residual > 0, stats.f.sf(seed_square / residual, seeds - 1, (tasks - 1) * (seeds - 1)), 1.0)


@dataclass(frozen=True)
class AcrossTasks:
    """The tests over tasks, one standardized delta a task."""

    z: dict[str, float]  # task -> mean over its paired seeds of the standardized delta
    left_out: tuple[str, ...]  # tasks without seed noise to standardize by
    wilcoxon: float  # two-sided p
    lean: float  # +1: the ranks lean towards A; -1: towards B
    positive: int
    negative: int
    sign: float  # two-sided sign test p
    interval: tuple[float, float]  # 95% two-level bootstrap interval of the mean z
    run_effect: float | None  # F-test p of a seed effect common to the tasks; None: fewer than two paired seeds

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.z.values()))) if self.z else 0.0


def across_tasks(deltas: dict[str, np.ndarray], left_out: tuple[str, ...] = (), resamples: int = BOOTSTRAP
                 ) -> AcrossTasks:
    """The tests over tasks of ``deltas``: per task, its paired seeds' standardized deltas (one
    delta of means where no seed pairs)."""
    z = {task: float(np.mean(d)) for task, d in deltas.items()}
    values = np.array(list(z.values()))
    wilcoxon, lean = (float(x) for x in wilcoxon_two_sided(values)) if len(values) else (1.0, 0)
    positive, negative = int((values > 0).sum()), int((values < 0).sum())
    interval = two_level_interval(list(deltas.values()), resamples) if deltas and resamples else (math.nan, math.nan)
    widths = {len(d) for d in deltas.values()}
    paired = len(deltas) > 1 and len(widths) == 1 and min(widths) > 1
    check = float(run_effect(np.stack(list(deltas.values())))) if paired else None
    return AcrossTasks(z, left_out, wilcoxon, lean, positive, negative, sign_test_two_sided(positive, negative),
                       interval, check)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p values along the last axis (``[..., arms]``): the family-wise
    error stays at most ALPHA when each adjusted p < ALPHA is called."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, axis=-1, kind="stable")
    ordered = np.take_along_axis(p, order, -1)
    scaled = np.minimum(1.0, (p.shape[-1] - np.arange(p.shape[-1])) * ordered)
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.maximum.accumulate(scaled, axis=-1), -1)
    return adjusted


# --------------------------------------------------------------------------- an arm against its baseline


@dataclass
class ArmComparison:
    """A variant against its baseline over seeds: the per-task rule on every task, the tests over
    tasks and the verdict; ``means``: the paper's tie rule on the seed means, for comparison."""

    name: str
    baseline: str
    rows: list[TaskTest]
    means: Comparison
    across: AcrossTasks
    noise: dict[str, SeedNoise]  # per task, the seed noise it was tested and standardized with
    adjusted: float = 1.0  # Holm-adjusted Wilcoxon p over the family
    family: int = 1  # arms the adjustment counts
    notes: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        """How many tasks the per-task rule scores ``outcome`` (W, L or T)."""
        return sum(r.outcome == outcome for r in self.rows)

    @property
    def run_check(self) -> bool:
        """The tasks may be taken as independent: no seed effect common to them (p >= RUN_GATE)."""
        return self.across.run_effect is not None and self.across.run_effect >= RUN_GATE

    @property
    def verdict(self) -> str:
        if self.adjusted < ALPHA and self.across.lean and self.run_check:
            return WIN if self.across.lean > 0 else LOSS
        return NOT_SEPARABLE

    @property
    def verdict_note(self) -> str:
        """Why a significant Wilcoxon still gives no verdict ('' when it does not apply)."""
        if not self.adjusted < ALPHA or self.run_check:
            return ""
        if self.across.run_effect is None:
            return "no verdict without two paired seeds or more: a run's effect common to its tasks cannot be checked"
        return (f"the seeds move every task together (run-effect F-test p = {self.across.run_effect:.3g} < "
                f"{RUN_GATE:g}): the tasks are not independent replicates")

    @property
    def test_note(self) -> str:
        """One line on test-set noise: measured on every task, on some, or why not."""
        measured = [r for r in self.rows if r.se_test is not None]
        if len(measured) == len(self.rows):
            return "test-set noise: measured on every task (bootstrap over its test examples)"
        reasons = sorted({r.test_note for r in self.rows if r.se_test is None and r.test_note})
        if not measured:
            return "; ".join(reasons)
        return (f"test-set noise: measured on {len(measured)} of {len(self.rows)} tasks; "
                + "; ".join(f"{', '.join(r.task for r in self.rows if r.test_note == why)}: {why}"
                            for why in reasons))


def _examples_by_seed(runs: VariantRuns) -> dict[str, dict]:
    """task -> seed -> its scored examples (None for a seed that kept none)."""
    out: dict[str, dict] = {}
    for seed, results, found in zip(runs.seeds, runs.probed, runs.examples()):
        for task in results["tasks"]:
            out.setdefault(task, {})[seed] = (found or {}).get(task)
    return out


def compare_arm(arm: VariantRuns, baseline: VariantRuns, noise: dict[str, SeedNoise], tie: float,
                examples: dict[str, dict], resamples: int = BOOTSTRAP, paired: bool = True) -> ArmComparison:
    """``arm`` against ``baseline`` under the per-task rule (``noise``: per task, pooled over the
    family; ``examples``: variant -> task -> seed -> scored examples) and the tests over tasks;
    ``paired``: seed k of each shares its data order or initialisation."""
    means = compare(mean_results(arm.probed), mean_results(baseline.probed), tie, arm.name, baseline.name)
    _missing_seeds(means, arm, baseline)
    scores_a, scores_b = arm.scores, baseline.scores
    order = {task: i for i, task in enumerate(scores_b)}
    rows, deltas, left_out = [], {}, []
    for row in sorted(means.rows, key=lambda r: order.get(r.task, len(order))):
        task = row.task
        a, b = scores_a[task], scores_b[task]
        ex_a, ex_b = examples[arm.name].get(task, {}), examples[baseline.name].get(task, {})
        result = next(p["tasks"][task] for p in baseline.probed if task in p["tasks"])
        first = next((e for e in list(ex_a.values()) + list(ex_b.values()) if e is not None), None)
        rows.append(task_test(task, row.metric, a, b, noise[task], resolution(result, first), ex_a, ex_b, paired))
        std = noise[task].std
        if not std:
            left_out.append(task)
            continue
        common = [s for s in a if s is not None and s in b] if paired else []
        deltas[task] = np.array([(a[s] - b[s]) / std for s in common]) if common else \
            np.array([(rows[-1].delta) / std])
    return ArmComparison(arm.name, baseline.name, rows, means, across_tasks(deltas, tuple(left_out), resamples),
                         {row.task: noise[row.task] for row in rows}, notes=list(arm.notes) + list(baseline.notes))


def _missing_seeds(means: Comparison, *variants: VariantRuns) -> None:
    """Say which seeds lack a score on a task the others scored (it is compared on those that have one)."""
    for runs in variants:
        for task, result in mean_results(runs.probed)["tasks"].items():
            if result["missing"] and result["value"] is not None:
                lacking = [f"seed {s}" for s, p in zip(runs.seeds, runs.probed)
                           if p["tasks"].get(task, {}).get("value") is None]
                means.warnings.append(f"{task}: no score in {runs.name} {', '.join(lacking)}: compared on the "
                                      "seeds that have one")


def compare_family(baseline: VariantRuns, arms: list[VariantRuns], tie: float, pooled: list[VariantRuns] = (),
                   resamples: int = BOOTSTRAP, unpaired: frozenset[str] = frozenset()) -> dict[str, ArmComparison]:
    """Every arm against the shared ``baseline``, the seed noise pooled over them all (and over
    ``pooled``: other variants of the experiment), the arms' Wilcoxon p adjusted together (Holm);
    the arms named in ``unpaired`` share nothing with the baseline's seeds of the same number."""
    everyone = {v.name: v for v in [baseline, *arms, *pooled]}
    noise = task_noise(v.scores for v in everyone.values())
    examples = {name: _examples_by_seed(v) for name, v in everyone.items()}
    return adjust_family({arm.name: compare_arm(arm, baseline, noise, tie, examples, resamples,
                                                paired=arm.name not in unpaired) for arm in arms})


def adjust_family(comparisons: dict[str, ArmComparison]) -> dict[str, ArmComparison]:
    """Holm over ``comparisons`` as one family (a verdict table): each arm's adjusted p."""
    for comparison, adjusted in zip(comparisons.values(), holm([c.across.wilcoxon for c in comparisons.values()])):
        comparison.adjusted, comparison.family = float(adjusted), len(comparisons)
    return comparisons


# --------------------------------------------------------------------------- seed against seed


@dataclass(frozen=True)
class NullSummary:
    """Every pair of one recipe's seeds under the per-task rule: the same recipe, so every W or L is
    a false positive."""

    pairs: int
    tests: int  # per-task tests over all pairs
    rejected: int  # of those, W or L

    @property
    def rate(self) -> float:
        return self.rejected / self.tests if self.tests else 0.0


def seed_null(runs: VariantRuns, noise: dict[str, SeedNoise], tie: float, examples: dict[str, dict]) -> NullSummary:
    """Seed i against seed j of one variant, every pair: a two-sample test of one run against one on
    ``noise`` (estimated without this variant's seeds, so that the pair tested does not set its own
    yardstick)."""
    tests = rejected = pairs = 0
    for i, j in itertools.combinations(range(len(runs.seeds)), 2):
        one, other = (VariantRuns(f"{runs.name} seed {runs.seeds[k]}", [runs.probed[k]], [runs.seeds[k]])
                      for k in (i, j))
        ex = {v.name: {t: {v.seeds[0]: by_seed.get(v.seeds[0])} for t, by_seed in examples.items()}
              for v in (one, other)}
        pair = compare_arm(one, other, noise, tie, ex, resamples=0)
        pairs += 1
        testable = [r for r in pair.rows if r.testable]
        tests += len(testable)
        rejected += sum(r.outcome != "T" for r in testable)
    return NullSummary(pairs, tests, rejected)


def seed_nulls(variants: list[VariantRuns], tie: float) -> dict[str, NullSummary]:
    """Per variant with two probed seeds or more, its seeds against each other, each on the seed
    noise of the other variants (all of them where it is the only one)."""
    out = {}
    for v in variants:
        if len(v.seeds) > 1:
            others = [o.scores for o in variants if o is not v] or [v.scores]
            out[v.name] = seed_null(v, task_noise(others), tie, _examples_by_seed(v))
    return out
