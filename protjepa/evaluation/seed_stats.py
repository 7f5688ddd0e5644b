"""Seeds and statistics: whether two recipes differ by more than reseeding one of them does.

Each variant is trained with several seeds (a seed sets the initialisation of new parts, the
data order and the masks). Per task, on its main metric:

- the seed noise ``s`` is the pooled within-variant sample std over every variant with at
  least two seeds on the task (variances weighted by ``n - 1``; ``df = sum(n - 1)``);
- the noise rule: a difference of means counts as a win or a loss only when
  ``|delta| > tie`` and ``|delta| > 2 s sqrt(1/n_a + 1/n_b)`` (twice the standard error of
  the difference, about a 95% band); without a measured ``s`` the tie rule alone decides;
- the minimal detectable effect ``(t_{0.975,df} + t_{0.80,df}) s sqrt(2/n)``: the smallest
  true difference of means found with 80% power at two-sided alpha 0.05, ``n`` seeds an arm.

Across tasks: the one-sided sign test (:func:`~protjepa.evaluation.compare.sign_test`) on
the wins and losses the noise rule counts, and a Wilcoxon signed-rank test on (task, seed)
pairs, each delta divided by its task's ``s`` so that tasks weigh alike.
"""
from __future__ import annotations

import itertools
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from scipy import stats

from protjepa.evaluation.compare import CompareError, Comparison, Row, compare, load_results, sign_test

ALPHA = 0.05
POWER = 0.8
WIN, LOSS, NOT_SEPARABLE = "win", "loss", "not separable from noise"

SeedScores = dict[str, dict[int | None, float]]  # task -> seed -> the task's main metric
SEED_FOLDER = re.compile(r"seed(\d+)")


def load_seeds(path: str | Path) -> tuple[list[dict], list[int | None]]:
    """One variant's probe results and seeds: a folder of ``seed<k>/`` folders (each a run, a
    probe folder or a results file, as :func:`~protjepa.evaluation.compare.load_results` reads
    them; the layout an experiment writes), or one result of an unknown seed (``[None]``)."""
    path = Path(path)
    folders = sorted((int(m.group(1)), child) for child in (path.iterdir() if path.is_dir() else [])
                     if child.is_dir() and (m := SEED_FOLDER.fullmatch(child.name)))
    if not folders:
        return [load_results(path)], [None]
    probed, seeds, unprobed = [], [], []
    for seed, folder in folders:
        try:
            probed.append(load_results(folder))
            seeds.append(seed)
        except CompareError:
            unprobed.append(folder.name)
    if not probed:
        raise CompareError(f"{path}: none of its seed folders ({', '.join(unprobed)}) holds probe results "
                           "(run protjepa probe on each first)")
    return probed, seeds


def mean_results(probed: list[dict]) -> dict:
    """Per task, the mean over seeds of the main metric (None when a seed has no score)."""
    tasks = {}
    for name, first in probed[0]["tasks"].items():
        values = [p["tasks"].get(name, {}).get("value") for p in probed]
        mean = statistics.fmean(values) if all(v is not None for v in values) else None
        tasks[name] = {"metric": first["metric"], "value": mean}
    return {"tasks": tasks, "settings": probed[0].get("settings", {})}


def seed_scores(probed: list[dict], seeds: list[int | None]) -> SeedScores:
    """One variant's probe results (one a seed, in ``seeds`` order) as task -> seed -> score;
    a seed without a score on a task is left out of it."""
    out: SeedScores = {}
    for seed, results in zip(seeds, probed, strict=True):
        for task, result in results["tasks"].items():
            if result.get("value") is not None:
                out.setdefault(task, {})[seed] = float(result["value"])
    return out


@dataclass(frozen=True)
class Spread:
    """One variant's scores on one task over its seeds."""

    mean: float
    std: float | None  # sample std (n - 1); None with one seed
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f}" if self.std is None else f"{self.mean:.4f} ± {self.std:.4f}"


def spread(values: Iterable[float]) -> Spread:
    values = list(values)
    return Spread(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


@dataclass(frozen=True)
class SeedNoise:
    """A task's seed noise: the pooled within-variant sample std and its degrees of freedom."""

    std: float | None  # None: no variant has two seeds on the task
    df: int


def pooled_noise(groups: Iterable[Sequence[float]]) -> SeedNoise:
    """Pooled sample std of the groups with two values or more, variances weighted by ``n - 1``."""
    groups = [list(g) for g in groups if len(g) > 1]
    df = sum(len(g) - 1 for g in groups)
    if not df:
        return SeedNoise(None, 0)
    return SeedNoise(math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups) / df), df)


def task_noise(variants: Iterable[SeedScores]) -> dict[str, SeedNoise]:
    """Per task, the seed noise pooled over every variant (those with one seed add nothing)."""
    variants = list(variants)
    tasks = dict.fromkeys(task for scores in variants for task in scores)
    return {task: pooled_noise(list(v[task].values()) for v in variants if task in v) for task in tasks}


def noise_band(noise: SeedNoise, n_a: int, n_b: int) -> float | None:
    """Twice the standard error of a difference of two means (None: no seed noise measured)."""
    return None if noise.std is None else 2 * noise.std * math.sqrt(1 / n_a + 1 / n_b)


def minimal_detectable_effect(noise: SeedNoise, n: int) -> float | None:
    """The smallest true difference of means a two-sided t-test at ``ALPHA`` finds with ``POWER``,
    ``n`` seeds an arm, the t quantiles on the pooled estimate's df."""
    if noise.std is None:
        return None
    quantiles = stats.t.ppf(1 - ALPHA / 2, noise.df) + stats.t.ppf(POWER, noise.df)
    return float(quantiles * noise.std * math.sqrt(2 / n))


def outcome(delta: float, tie: float, band: float | None) -> str:
    """The noise rule: W / L only beyond both the tie tolerance and the noise band (if measured)."""
    if abs(delta) <= tie or (band is not None and abs(delta) <= band):
        return "T"
    return "W" if delta > 0 else "L"


def wilcoxon_p(deltas: Sequence[float], alternative: str) -> float:
    """Wilcoxon signed-rank p of ``deltas`` against 0 (zeros dropped; 1.0 when none is left)."""
    if not any(deltas):
        return 1.0
    return float(stats.wilcoxon(deltas, alternative=alternative).pvalue)


@dataclass(frozen=True)
class PairedTest:
    """Seed k of A against seed k of B on every task, deltas in units of the task's seed noise.
    Pairs of one seed share a model, so they are not independent: the p values are optimistic."""

    n: int  # (task, seed) pairs
    greater: float  # one-sided p, A better
    less: float  # one-sided p, A worse
    two_sided: float
    left_out: tuple[str, ...]  # tasks without seed noise to standardise by


def paired_test(a: SeedScores, b: SeedScores, noise: dict[str, SeedNoise], tasks: Iterable[str]) -> PairedTest:
    deltas: list[float] = []
    left_out = []
    for task in tasks:
        std = noise[task].std
        if not std:
            left_out.append(task)
            continue
        deltas += [(a[task][seed] - b[task][seed]) / std for seed in a[task] if seed in b[task]]
    return PairedTest(len(deltas), wilcoxon_p(deltas, "greater"), wilcoxon_p(deltas, "less"),
                      wilcoxon_p(deltas, "two-sided"), tuple(left_out))


@dataclass(frozen=True)
class SeededRow:
    row: Row  # the task's means over seeds, their delta and the paper's tie rule
    a: Spread
    b: Spread
    band: float | None  # the noise band of the delta; None: no seed noise measured on the task

    def outcome(self, tie: float) -> str:
        return outcome(self.row.delta, tie, self.band)


@dataclass(frozen=True)
class SeededComparison:
    """A variant against its baseline over seeds: the paper's tie rule on the means (``means``),
    the noise rule per task, and the paired test."""

    means: Comparison
    rows: list[SeededRow]
    paired: PairedTest

    def count(self, result: str) -> int:
        """How many tasks the noise rule scores ``result`` (W, L or T)."""
        return sum(r.outcome(self.means.tie) == result for r in self.rows)

    @property
    def p_value(self) -> float:
        """One-sided sign test on the noise rule's wins and losses, that A is better."""
        return sign_test(self.count("W"), self.count("L"))

    @property
    def p_worse(self) -> float:
        """Likewise, that A is worse."""
        return sign_test(self.count("L"), self.count("W"))

    @property
    def verdict(self) -> str:
        """``win`` when the noise rule's sign test and the paired test both say A is better at
        ``ALPHA``; ``loss`` when both say worse; otherwise not separable from noise."""
        if self.p_value < ALPHA and self.paired.greater < ALPHA:
            return WIN
        if self.p_worse < ALPHA and self.paired.less < ALPHA:
            return LOSS
        return NOT_SEPARABLE


def compare_seeds(means: Comparison, a: SeedScores, b: SeedScores, noise: dict[str, SeedNoise]) -> SeededComparison:
    """``means`` (the comparison of the two variants' means over seeds) with each task's seeds;
    rows in B's task order (the order it was probed in)."""
    order = {task: i for i, task in enumerate(b)}
    rows = []
    for row in sorted(means.rows, key=lambda r: order[r.task]):
        spread_a, spread_b = spread(a[row.task].values()), spread(b[row.task].values())
        rows.append(SeededRow(row, spread_a, spread_b, noise_band(noise[row.task], spread_a.n, spread_b.n)))
    return SeededComparison(means, rows, paired_test(a, b, noise, [r.task for r in means.rows]))


def seed_pairs(name: str, probed: list[dict], seeds: list[int], tie: float) -> list[Comparison]:
    """Every pair of one variant's seeds compared task by task under the tie rule, each pair
    turned so that A is the seed with more wins: what one seed a variant could have reported."""
    pairs = []
    for (i, seed_i), (j, seed_j) in itertools.combinations(enumerate(seeds), 2):
        pair = compare(probed[j], probed[i], tie, f"{name} seed {seed_j}", f"seed {seed_i}")
        if pair.count("L") > pair.count("W"):
            pair = compare(probed[i], probed[j], tie, f"{name} seed {seed_i}", f"seed {seed_j}")
        pairs.append(pair)
    return pairs


@dataclass(frozen=True)
class NullSummary:
    """Seed against seed of one recipe: the mean W / L / T over pairs and the sign tests' p."""

    pairs: int
    wins: float
    losses: float
    ties: float
    smallest_p: float
    below_alpha: int  # pairs whose sign test p < ALPHA: "wins" the tie rule reports from noise alone


def null_summary(pairs: list[Comparison]) -> NullSummary:
    def mean(result: str) -> float:
        return statistics.fmean(p.count(result) for p in pairs)

    return NullSummary(len(pairs), mean("W"), mean("L"), mean("T"), min(p.p_value for p in pairs),
                       sum(p.p_value < ALPHA for p in pairs))


def compare_variants(a: tuple[list[dict], list[int | None]], b: tuple[list[dict], list[int | None]],
                     tie: float, name_a: str = "A", name_b: str = "B") -> SeededComparison:
    """Variant A against variant B, each ``(probe results, seeds)`` as :func:`load_seeds` reads
    them: the seed noise pooled over both, the noise rule per task, the paired test on the seeds
    both have, the paper's tie rule on the means beside it."""
    by_a, by_b = seed_scores(*a), seed_scores(*b)
    means = compare(mean_results(a[0]), mean_results(b[0]), tie, name_a, name_b)
    return compare_seeds(means, by_a, by_b, task_noise([by_a, by_b]))


def seeded_markdown(s: SeededComparison, nulls: dict[str, NullSummary]) -> str:
    """``protjepa compare`` over seeds: the per-task table, both rules' counts, the paired test,
    the verdict and, per variant with two seeds or more, its seeds against each other."""
    c = s.means
    lines = [
        f"# {c.name_a} vs {c.name_b}, over seeds",
        "",
        f"Main metric per task (higher is better): mean ± sample std over seeds; delta = {c.name_a} - {c.name_b} "
        f"of the means. **Noise rule**: a win or a loss only when |delta| > {c.tie:g} and |delta| > the band, "
        "2 s sqrt(1/n_a + 1/n_b) with s the task's seed noise pooled over both variants († none measured: the tie "
        f"rule alone). **Tie rule** (the paper's): a tie when |delta| <= {c.tie:g}.",
        "",
        f"| task | metric | {c.name_a} (n) | {c.name_b} (n) | delta | band | noise rule | tie rule |",
        "|---|---|---:|---:|---:|---:|:---:|:---:|",
    ]
    lines += [f"| {r.row.task} | {r.row.metric} | {r.a} ({r.a.n}) | {r.b} ({r.b.n}) | {r.row.delta:+.4f} | "
              + ("† |" if r.band is None else f"{r.band:.4f} |") + f" {r.outcome(c.tie)} | {r.row.outcome(c.tie)} |"
              for r in s.rows]
    paired = s.paired
    lines += [
        "",
        f"- **noise rule: {s.count('W')} wins / {s.count('L')} losses / {s.count('T')} ties**; one-sided sign test "
        f"(ties left out) p = {s.p_value:.4g} ({c.name_a} better), {s.p_worse:.4g} (worse)",
        f"- tie rule: {c.count('W')} / {c.count('L')} / {c.count('T')}; p = {c.p_value:.4g} (better), "
        f"{c.p_worse:.4g} (worse)",
        (f"- paired test (seed k against seed k on every task, deltas in units of s; Wilcoxon; {paired.n} pairs, "
         f"optimistic: one seed's pairs share a model): one-sided p = {paired.greater:.4g} ({c.name_a} better), "
         f"{paired.less:.4g} (worse), two-sided {paired.two_sided:.4g}") if paired.n else
        "- paired test: no seed in common (or no seed noise measured), so none",
        f"- **verdict: {s.verdict}** (a win or a loss needs the noise rule's sign test and the paired test "
        f"both at p < {ALPHA:g})",
    ]
    for name, null in nulls.items():
        lines.append(f"- {name}, seed against seed ({null.pairs} pair{'s' * (null.pairs > 1)}, tie rule): on average "
                     f"{null.wins:.3g} W / {null.losses:.3g} L / {null.ties:.3g} T; smallest sign test p "
                     f"{null.smallest_p:.3g}")
    lines += [f"- not compared: {why}" for why in c.unmatched]
    lines += [f"- warning: {why}" for why in c.warnings]
    return "\n".join(lines) + "\n"
