"""Seeds, and whether one task's score differs between two recipes by more than chance.

Each variant is trained with several seeds; seed k of every variant shares its data order (and,
from scratch, its initial weights), so seeds pair. Per task, on its main metric:

- the **seed noise** ``s``: the pooled within-variant sample std over every variant with two
  seeds or more on the task (variances weighted by ``n - 1``); it sets each task's scale;
- the **per-task rule**, a two-sided test at level ``ALPHA``: with two seeds in common or more, a
  paired t-test on the seeds' deltas (``df = n - 1``); otherwise a two-sample t-test on the
  pooled ``s``. Where each run kept its scored examples, the test-set noise (the spread of the
  delta of seed means over ``TEST_RESAMPLES`` bootstrap draws of the test examples, drawn alike
  for every run) adds to the seed noise's variance, and the degrees of freedom follow
  Welch-Satterthwaite (the bootstrap's taken as unlimited). A win or a loss also needs ``|delta|``
  beyond the metric's resolution (one test example for an accuracy or a recall, a count's step);
- the **minimal detectable effect**: ``(t_{1-ALPHA/2,df} + t_{POWER,df}) x SE``, the smallest true
  delta the rule finds with 80% power: for the benchmark when test-set noise is counted, for the
  scored subsample otherwise.

Boundary comparisons allow a relative 1e-9 (:func:`beyond`): a delta of exactly one example out
of 149 is one example, whatever floating point makes of 4/3 - 1/3.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from protjepa.evaluation.compare import CompareError, load_results
from protjepa.evaluation.examples import EXAMPLES_FILE, RECALL, ExamplesError, TaskExamples, read_examples, \
    resampled_metrics

ALPHA = 0.05
POWER = 0.8
TEST_RESAMPLES = 1_000  # bootstrap draws of the test examples: the variance to about 4.5%
RELATIVE = 1e-9  # boundary comparisons: what floating point may add to an exact tie
ABSOLUTE = 1e-12
SEED_FOLDER = re.compile(r"seed(\d+)")
TEST_NOISE_OLD = "test-set noise: not measured (old probe results)"

SeedScores = dict[str, dict[int | None, float]]  # task -> seed -> the task's main metric


def beyond(value: float, bound: float) -> bool:
    """``value > bound``, where an exact tie computed in floating point stays a tie."""
    return value > bound * (1 + RELATIVE) + ABSOLUTE


# --------------------------------------------------------------------------- a variant's seeds


@dataclass
class VariantRuns:
    """One variant's probe results, one a seed (``None``: a result of unknown seed)."""

    name: str
    probed: list[dict]
    seeds: list[int | None]
    notes: list[str] = field(default_factory=list)  # what loading left out, for the report

    @property
    def scores(self) -> SeedScores:
        return seed_scores(self.probed, self.seeds)

    def examples(self) -> list[dict[str, TaskExamples] | None]:
        """Per seed, its tasks' scored examples (None: results written before probes kept them)."""
        return [run_examples(results) for results in self.probed]


def load_seeds(path: str | Path, name: str | None = None) -> VariantRuns:
    """One variant: a folder of ``seed<k>/`` folders (each a run, a probe folder or a results file,
    as :func:`~protjepa.evaluation.compare.load_results` reads them: the layout an experiment writes),
    or one result of an unknown seed. A folder named like a seed that is not one (``seedX``,
    ``seed-1``) is an error: a comparison must not quietly drop seeds."""
    path = Path(path)
    name = name or path.name
    children = [c for c in path.iterdir() if c.is_dir()] if path.is_dir() else []
    folders = sorted((int(m.group(1)), c) for c in children if (m := SEED_FOLDER.fullmatch(c.name)))
    odd = sorted(c.name for c in children if c.name.startswith("seed") and not SEED_FOLDER.fullmatch(c.name))
    if odd:
        raise CompareError(f"{path}: {', '.join(odd)}: not seed folders (seed<k>, k a whole number 0, 1, ...): "
                           "rename or move them, so that no seed is left out unseen")
    if not folders:
        return VariantRuns(name, [check_scores(load_results(path))], [None])
    runs = VariantRuns(name, [], [])
    unprobed = []
    for seed, folder in folders:
        try:
            runs.probed.append(check_scores(load_results(folder)))
            runs.seeds.append(seed)
        except CompareError as exc:
            if "no results.json" not in str(exc):
                raise
            unprobed.append(folder.name)
    if not runs.probed:
        raise CompareError(f"{path}: none of its seed folders ({', '.join(unprobed)}) holds probe results "
                           "(run protjepa probe on each first)")
    if unprobed:
        runs.notes.append(f"{name}: {', '.join(unprobed)} not probed: left out")
    return runs


def check_scores(results: dict) -> dict:
    """``results``, once every task's value is a finite number or null; else an error naming the file."""
    for task, result in results["tasks"].items():
        value = result.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise CompareError(f"{results.get('path', 'results')}: tasks.{task}.value: {value!r} is not a finite "
                               "number")
    return results


def run_examples(results: dict) -> dict[str, TaskExamples] | None:
    """The scored examples kept beside a probe's ``results.json`` (read from ``results['path']``'s
    folder); None when the results predate them or came from no file."""
    recorded = {task: r["examples"] for task, r in results["tasks"].items() if isinstance(r.get("examples"), dict)}
    if not recorded or "path" not in results:
        return None
    path = Path(results["path"]).parent / EXAMPLES_FILE
    if not path.is_file():
        raise CompareError(f"{path}: missing, though {results['path']} records scored examples "
                           f"({', '.join(recorded)})")
    try:
        return read_examples(path, recorded)
    except ExamplesError as exc:
        raise CompareError(str(exc)) from None


def seed_scores(probed: list[dict], seeds: list[int | None]) -> SeedScores:
    """One variant's probe results (one a seed, in ``seeds`` order) as task -> seed -> score;
    a seed without a score on a task is left out of it."""
    out: SeedScores = {}
    for seed, results in zip(seeds, probed, strict=True):
        for task, result in results["tasks"].items():
            if result.get("value") is not None:
                out.setdefault(task, {})[seed] = float(result["value"])
    return out


def mean_results(probed: list[dict]) -> dict:
    """Per task, the mean over the seeds that scored it of the main metric (None when none did);
    ``missing``: how many seeds have no score there."""
    tasks = {}
    for name in dict.fromkeys(t for p in probed for t in p["tasks"]):
        first = next(p["tasks"][name] for p in probed if name in p["tasks"])
        values = [v for p in probed if (v := p["tasks"].get(name, {}).get("value")) is not None]
        tasks[name] = {"metric": first["metric"], "value": statistics.fmean(values) if values else None,
                       "missing": len(probed) - len(values)}
    return {"tasks": tasks, "settings": probed[0].get("settings", {})}


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


# --------------------------------------------------------------------------- seed noise


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


# --------------------------------------------------------------------------- the per-task rule


def combined_error(se_seeds: np.ndarray, df_seeds: np.ndarray, se_test: np.ndarray | float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The standard error of a delta from seed noise and test-set noise, and its degrees of
    freedom by Welch-Satterthwaite (the test-set part's unlimited)."""
    variance = np.square(se_seeds) + np.square(se_test)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(se_seeds > 0, np.square(variance) / (np.power(se_seeds, 4) / df_seeds), np.inf)
    return np.sqrt(variance), df


def t_test_p(delta: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p of ``delta`` against 0 with standard error ``se`` on ``df`` degrees of freedom
    (a delta without noise: 0 when it is not 0, else 1)."""
    delta, se, df = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (delta, se, df)))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2 * stats.t.sf(np.abs(delta) / se, df)
    zero = np.abs(delta) <= ABSOLUTE
    return np.where(se > 0, p, np.where(zero, 1.0, 0.0))


def quantiles(df: float) -> float:
    """``t_{1-ALPHA/2,df} + t_{POWER,df}``: a delta this many standard errors from 0 is found with ``POWER``."""
    return float(stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(POWER, df))


def resolution(result: dict, examples: TaskExamples | None = None) -> float:
    """The smallest step of a task's main metric: one test example for an accuracy (one element
    of a per-residue task, when its examples say how many) or a recall; 0 for the rank metrics
    (Spearman's rho and the AUC move by amounts too small to matter)."""
    metric = result.get("metric", "")
    if metric != "accuracy" and not RECALL.fullmatch(metric):
        return 0.0
    if examples is not None:
        return 1 / len(examples.output)
    if metric == "accuracy" and not result.get("type", "").startswith("per_residue") and result.get("n_test"):
        return 1 / result["n_test"]
    counted = RECALL.fullmatch(metric) and next(
        (int(n) for note in result.get("notes", []) if note.startswith("queries counted:")
         for n, level in re.findall(r"(\d+) at (\w+)", note) if level == RECALL.fullmatch(metric).group(1)), None)
    return 1 / counted if counted else 0.0


@dataclass(frozen=True)
class TaskTest:
    """One task under the per-task rule: A's and B's seeds, the delta, its noise and the outcome."""

    task: str
    metric: str
    a: Spread
    b: Spread
    delta: float  # paired: the mean of the seeds' deltas; else the difference of the means
    paired: int  # seeds in common the test pairs (0: a two-sample test on the pooled seed noise)
    se_seeds: float | None  # None: no seed noise to test with
    df_seeds: float
    se_test: float | None  # None: test-set noise not measured
    tie: float  # the metric's resolution
    test_note: str = ""  # why test-set noise is not measured

    @property
    def testable(self) -> bool:
        return self.se_seeds is not None

    @property
    def se(self) -> float | None:
        return None if self.se_seeds is None else float(combined_error(np.float64(self.se_seeds), self.df_seeds,
                                                                       self.se_test or 0.0)[0])

    @property
    def df(self) -> float | None:
        return None if self.se_seeds is None else float(combined_error(np.float64(self.se_seeds), self.df_seeds,
                                                                       self.se_test or 0.0)[1])

    @property
    def p(self) -> float | None:
        return None if self.se_seeds is None else float(t_test_p(self.delta, self.se, self.df))

    @property
    def outcome(self) -> str:
        """W / L when the test rejects at ALPHA and |delta| is beyond the resolution; T otherwise (also
        without seed noise to test with)."""
        if self.p is None or not self.p < ALPHA or not beyond(abs(self.delta), self.tie):
            return "T"
        return "W" if self.delta > 0 else "L"

    @property
    def mde(self) -> float | None:
        """The smallest true delta this rule finds with POWER, and at least one step of the metric
        (None: not testable)."""
        if self.se is None:
            return None
        return max(quantiles(self.df) * self.se, self.tie)


def sampling_error(task: str, a: list[TaskExamples | None], b: list[TaskExamples | None]) -> tuple[float | None, str]:
    """The standard error that resampling the test examples gives the delta of seed means (the
    same draws for every run), or None and why not."""
    if any(e is None for e in a + b):
        return None, TEST_NOISE_OLD if all(e is None for e in a + b) else \
            "test-set noise: not measured (some runs kept no scored examples)"
    try:
        metrics = resampled_metrics(a + b, TEST_RESAMPLES, seed=_task_seed(task))
    except ExamplesError:
        return None, "test-set noise: not measured (the runs scored different test examples)"
    if metrics.shape[1] < 2:
        return None, "test-set noise: not measured (the resamples leave the metric undefined)"
    deltas = metrics[:len(a)].mean(0) - metrics[len(a):].mean(0)
    return float(np.std(deltas, ddof=1)), ""


def _task_seed(task: str) -> int:
    """A resampling seed of the task's name: every comparison of a task draws the same test sets."""
    return int.from_bytes(task.encode()[:8].ljust(8, b"\0"), "little")


def task_test(task: str, metric: str, a: dict[int | None, float], b: dict[int | None, float], noise: SeedNoise,
              tie: float, examples_a: dict | None = None, examples_b: dict | None = None,
              paired: bool = True) -> TaskTest:
    """The per-task rule on one task: A's and B's scores by seed, the task's seed noise, the
    metric's resolution, and per seed its scored examples (``seed -> TaskExamples | None``).
    ``paired``: whether seed k of A and of B share anything (a data order, an initialisation)."""
    common = [s for s in a if s is not None and s in b] if paired else []
    if len(common) >= 2:
        deltas = [a[s] - b[s] for s in common]
        delta, se, df = statistics.fmean(deltas), statistics.stdev(deltas) / math.sqrt(len(deltas)), len(deltas) - 1
        if not beyond(se, RELATIVE * max(abs(x) for x in (*a.values(), *b.values()))):
            se = 0.0  # the seeds' deltas are one number (a count's step each time): only rounding tells them apart
        used_a = used_b = common
    else:
        spread_a, spread_b = spread(a.values()), spread(b.values())
        delta = spread_a.mean - spread_b.mean
        se = None if noise.std is None else noise.std * math.sqrt(1 / spread_a.n + 1 / spread_b.n)
        df, used_a, used_b = noise.df, list(a), list(b)
        common = []
    se_test, why = (None, "test-set noise: not measured (no seed noise to add it to)") if se is None else \
        sampling_error(task, [(examples_a or {}).get(s) for s in used_a], [(examples_b or {}).get(s) for s in used_b])
    return TaskTest(task, metric, spread(a.values()), spread(b.values()), delta, len(common), se, df, se_test, tie,
                    why)
