"""Simulated A/A experiments: how often each rule of the verdicts calls a difference where there is none.

A design (tasks, seeds, arms sharing one baseline) is simulated ``simulations`` times with no
difference between the arms and the baseline that a rule should find, and the same functions
that judge real runs (:mod:`protjepa.evaluation.seed_stats`, :mod:`protjepa.evaluation.verdicts`)
judge each simulated experiment. The structure copies what our runs show (units: one run's seed
noise on a task):

- every task has its own scale (standardization must put them on one);
- seed k of every arm shares a component (``pairing``: the share of seed variance two arms' seed
  k have in common: the same data order, and from scratch the same initial weights);
- a run has a component common to all its tasks (correlated tasks): ``run_share`` of the
  variance of two runs' delta on a task, the rest the task's own;
- ``task_spread``: the arms' true effects differ by task but average zero (the tests over tasks
  must not call that a win: the 42-pair test of (task, seed) pairs did, 10-17% of the time);
- ``test_noise``: each arm's delta on a task's scored subsample is off its benchmark delta by a
  fluctuation shared by all seeds (estimated, as the test-set bootstrap estimates it, from
  ``test_resamples`` draws).

A rule's rate is its share of rejections at ``ALPHA``: the per-task rule over every (arm, task)
with no true effect, the verdict per arm (its own Wilcoxon p and the run-effect check), the family
(any arm after Holm). The defaults are what the committed runs show: seeds' scores of two arms
correlate about 0.85 on a task; the paired deltas' run component is 0-3% of their variance
(estimated 0.3% median over 17 comparisons, at most 15%; the design takes 3%); the tasks' true
effects spread about 0.7 seed-noise units around their mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protjepa.evaluation.seed_stats import ALPHA, combined_error, t_test_p
from protjepa.evaluation.verdicts import RUN_GATE, holm, run_effect, sign_test_two_sided, two_level_interval, \
    wilcoxon_two_sided

SIMULATIONS = 2_000


@dataclass(frozen=True)
class Design:
    tasks: int = 14
    seeds: int = 3
    arms: int = 1
    pairing: float = 0.85
    run_share: float = 0.03
    task_spread: float = 0.7
    test_noise: float = 0.0
    test_resamples: int = 1_000


@dataclass(frozen=True)
class Rates:
    """Each rule's share of rejections over the simulated experiments."""

    simulations: int
    per_task: float  # per-task rule, over every (arm, task); nan when task_spread puts true effects there
    per_task_without_test_noise: float  # the per-task rule had it ignored the test-set noise
    verdict: float  # per arm, its own Wilcoxon over tasks and the run-effect check
    family: float  # any arm of an experiment after Holm (and the check)
    wilcoxon: float  # per arm, the Wilcoxon over tasks alone
    sign: float  # per arm, the sign test over tasks
    interval: float  # per arm, the two-level bootstrap interval excluding 0 (nan when not drawn)


def simulate_scores(design: Design, simulations: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simulated experiments: scores ``[simulations, arms + 1, tasks, seeds]`` (arm 0 the baseline)
    and each task's scale ``[simulations, tasks]``."""
    d = design
    shape = (simulations, d.arms + 1, d.tasks, d.seeds)
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), (simulations, 1, d.tasks, 1)))
    common = d.run_share * (1 - d.pairing)  # a delta's variance is 2 (1 - pairing); 2 common of it is the runs'
    shared = rng.normal(0, np.sqrt(d.pairing), (simulations, 1, d.tasks, d.seeds))
    run = rng.normal(0, np.sqrt(common), (simulations, d.arms + 1, 1, d.seeds))
    own = rng.normal(0, np.sqrt(1 - d.pairing - common), shape)
    fixed = rng.normal(0, d.task_spread, (simulations, d.arms + 1, d.tasks, 1)) + \
        rng.normal(0, d.test_noise, (simulations, d.arms + 1, d.tasks, 1))
    fixed[:, 0] = 0.0
    return (shared + run + own + fixed) * scale, scale[:, 0, :, 0]


def simulate(design: Design, simulations: int = SIMULATIONS, seed: int = 0, interval_resamples: int = 0) -> Rates:
    """Each rule's false-positive rate on ``design`` (the interval's only when ``interval_resamples``)."""
    rng = np.random.default_rng(seed)
    n = design.seeds
    scores, scale = simulate_scores(design, simulations, rng)
    deltas = scores[:, 1:] - scores[:, :1]  # [S, arms, tasks, seeds]
    se_seeds = deltas.std(axis=3, ddof=1) / np.sqrt(n)
    estimate = np.sqrt(rng.chisquare(design.test_resamples - 1, se_seeds.shape) / (design.test_resamples - 1))
    se_test = design.test_noise * scale[:, None] * estimate  # the bootstrap's estimate of the test-set error
    delta = deltas.mean(3)
    per_task = t_test_p(delta, *combined_error(se_seeds, n - 1, se_test)) < ALPHA
    naive = t_test_p(delta, *combined_error(se_seeds, n - 1)) < ALPHA
    noise = np.sqrt(scores.var(axis=3, ddof=1).mean(1))  # [S, tasks]: pooled within-variant std (equal n)
    standardized = deltas / noise[:, None, :, None]
    wilcoxon, _ = wilcoxon_two_sided(standardized.mean(3))  # [S, arms]
    independent = run_effect(standardized) >= RUN_GATE  # the run-effect check the verdict needs
    positive, negative = (standardized.mean(3) > 0).sum(2), (standardized.mean(3) < 0).sum(2)
    sign = np.vectorize(sign_test_two_sided)(positive, negative)
    interval = float("nan")
    if interval_resamples:
        misses = []
        for s, a in np.ndindex(simulations, design.arms):
            low, high = two_level_interval(list(standardized[s, a]), interval_resamples, seed=s)
            misses.append(not low <= 0 <= high)
        interval = float(np.mean(misses))
    spread = design.task_spread > 0
    return Rates(simulations, float("nan") if spread else float(per_task.mean()),
                 float("nan") if spread else float(naive.mean()), float(((wilcoxon < ALPHA) & independent).mean()),
                 float(((holm(wilcoxon) < ALPHA) & independent).any(1).mean()), float((wilcoxon < ALPHA).mean()),
                 float((sign < ALPHA).mean()), interval)
