"""Each scored test example's output, kept beside a probe's results, so that a comparison can
resample the test set (:func:`resampled_metrics`) and count test-set noise beside seed noise.

A probe scores one fixed test set, often a subsample (a task's fast caps: 149 EC proteins, 200
CB513 chains); another draw of test proteins would move the score. Each task keeps one of four
kinds of per-element outputs, by its main metric:

- ``mean``: a 0/1 value per element whose mean is the metric (accuracy: correct; a retrieval
  recall ``<level>_recall@<k>``: the query's hit);
- ``spearman`` / ``pearson``: the prediction (``output``) and the truth per element;
- ``auc``: the score (``output``) and whether the element is positive (``truth``, 1 or 0).

An *example* is what a test set samples: a protein, a query, a variant. A per-residue task has
one element per labelled residue, and ``sizes`` counts each example's elements, so that a
resample draws whole proteins. ``identity`` digests the scored sequences in order: two runs'
examples pair only when they scored the same ones.

Written as ``examples.npz`` beside ``results.json`` (plain numeric arrays, read back with
``allow_pickle=False``: nothing in the file can run code).
"""
from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from protjepa.errors import UserError

EXAMPLES_FILE = "examples.npz"
KINDS = ("mean", "spearman", "pearson", "auc")
RECALL = re.compile(r"(.+)_recall@(\d+)")
CHUNK_ELEMENTS = 4_000_000  # resamples x elements held at once (32 MB of float64)


class ExamplesError(UserError, ValueError):
    """Per-example outputs that cannot be read or paired."""


def kind_of(metric: str) -> str | None:
    """The kind of examples that rescore ``metric``; None for a metric they cannot (macro-F1)."""
    if metric == "accuracy" or RECALL.fullmatch(metric):
        return "mean"
    return metric if metric in ("spearman", "pearson", "auc") else None


def identity_of(sequences: Sequence[str], sizes: np.ndarray) -> str:
    """A digest of the scored examples, in order, and of their element counts."""
    digest = hashlib.sha256()
    for sequence in sequences:
        digest.update(sequence.encode() + b"\0")
    digest.update(np.asarray(sizes, dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TaskExamples:
    """One task's scored elements: ``output`` (and ``truth``) per element, ``sizes`` per example."""

    kind: str
    output: np.ndarray  # float64 [M]: the 0/1 value (mean), the prediction or the score
    truth: np.ndarray | None  # float64 [M]: the truth (spearman, pearson), 1/0 positive (auc); None for mean
    sizes: np.ndarray  # int64 [N]: elements per example, each >= 1, summing to M
    identity: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ExamplesError(f"examples of kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        elements = int(self.sizes.sum())
        if (self.sizes < 1).any() or len(self.output) != elements or \
                (self.truth is None) != (self.kind == "mean") or \
                (self.truth is not None and len(self.truth) != elements):
            raise ExamplesError(f"{self.kind} examples: {len(self.output)} outputs for {elements} elements "
                                f"of {len(self.sizes)} examples do not line up")

    @property
    def metric(self) -> float:
        """The main metric on every example (what the probe reported)."""
        return float(resample_weights_metric(self, np.ones((1, len(self.output))))[0])

    def summary(self) -> dict:
        """What ``results.json`` records beside the arrays."""
        return {"kind": self.kind, "examples": len(self.sizes), "elements": int(self.sizes.sum()),
                "identity": self.identity}


def task_examples(metric: str, sequences: Sequence[str], sizes: np.ndarray, *, prediction: np.ndarray,
                  truth: np.ndarray, score: np.ndarray | None = None, positive: np.ndarray | None = None,
                  hit: np.ndarray | None = None) -> TaskExamples | None:
    """The examples that rescore ``metric`` from a probe's per-element outputs (None: a metric
    examples cannot rescore). ``score``/``positive``: a binary task's; ``hit``: a retrieval's."""
    kind = kind_of(metric)
    if kind is None:
        return None
    sizes = np.asarray(sizes, dtype=np.int64)
    identity = identity_of(sequences, sizes)
    if kind == "mean":
        value = hit if hit is not None else np.asarray(prediction == truth)
        return TaskExamples(kind, np.asarray(value, dtype=np.float64), None, sizes, identity)
    if kind == "auc":
        return TaskExamples(kind, np.asarray(score, dtype=np.float64), np.asarray(positive, dtype=np.float64),
                            sizes, identity)
    return TaskExamples(kind, np.asarray(prediction, dtype=np.float64), np.asarray(truth, dtype=np.float64),
                        sizes, identity)


# --------------------------------------------------------------------------- files


def write_examples(examples: dict[str, TaskExamples], path: Path) -> Path:
    arrays = {}
    for task, ex in examples.items():
        arrays[f"{task}/output"] = ex.output
        arrays[f"{task}/sizes"] = ex.sizes
        if ex.truth is not None:
            arrays[f"{task}/truth"] = ex.truth
    np.savez_compressed(path, **arrays)
    return path


def read_examples(path: Path, recorded: dict[str, dict]) -> dict[str, TaskExamples]:
    """The tasks' examples in ``path``, as ``recorded`` (task -> :meth:`TaskExamples.summary`, from
    results.json) describes them; an error naming the file and the task when they disagree."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            stored = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ExamplesError(f"{path}: not readable as per-example outputs ({exc})") from None
    out = {}
    for task, record in recorded.items():
        try:
            truth = stored.get(f"{task}/truth")
            out[task] = TaskExamples(record["kind"], stored[f"{task}/output"].astype(np.float64),
                                     None if truth is None else truth.astype(np.float64),
                                     stored[f"{task}/sizes"].astype(np.int64), str(record["identity"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExamplesError(f"{path}: {task}: per-example outputs missing or malformed ({exc})") from None
        if out[task].summary() != record:
            raise ExamplesError(f"{path}: {task}: the arrays do not match results.json's record of them")
    return out


# --------------------------------------------------------------------------- resampling


def _weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, M]: each element's rank in every weighted sample (an element of weight w stands w times;
    tied values share their average rank, as scipy's rankdata)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group = np.add.reduceat(weights[:, order], starts, axis=1)
    rank = np.cumsum(group, axis=1) - group + (group + 1) / 2
    out = np.empty_like(weights, dtype=np.float64)
    out[:, order] = np.repeat(rank, np.diff(np.r_[starts, len(values)]), axis=1)
    return out


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = weights.sum(1, keepdims=True)
    dx = x - (weights * x).sum(1, keepdims=True) / total
    dy = y - (weights * y).sum(1, keepdims=True) / total
    cov = (weights * dx * dy).sum(1)
    var = (weights * dx * dx).sum(1) * (weights * dy * dy).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(var), np.nan)


def _weighted_auc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of every weighted sample: P(score of a positive > a negative's), ties count half."""
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * (1 - positive[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + neg / 2)).sum(1) / (pos.sum(1) * neg.sum(1))


def resample_weights_metric(ex: TaskExamples, weights: np.ndarray) -> np.ndarray:
    """[B]: the metric on each weighted sample of the elements (``weights`` [B, M]; nan where the
    sample leaves it undefined: one class, a constant)."""
    if ex.kind == "mean":
        return (weights @ ex.output) / weights.sum(1)
    if ex.kind == "auc":
        return _weighted_auc(ex.output, ex.truth, weights)
    if ex.kind == "pearson":
        return _weighted_pearson(np.broadcast_to(ex.output, weights.shape), np.broadcast_to(ex.truth, weights.shape),
                                 weights)
    return _weighted_pearson(_weighted_ranks(ex.output, weights), _weighted_ranks(ex.truth, weights), weights)


def example_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[B, n]: how often each of ``n`` examples is drawn in each of ``resamples`` draws of n with replacement."""
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def resampled_metrics(runs: Sequence[TaskExamples], resamples: int, seed: int) -> np.ndarray:
    """[R, B]: each run's metric on the same ``resamples`` bootstrap draws of the test examples
    (whole examples, with replacement; draws where any run's metric is undefined are dropped).
    The runs must have scored the same examples (one ``identity``)."""
    first = runs[0]
    if any(r.identity != first.identity or r.kind != first.kind for r in runs):
        raise ExamplesError("the runs scored different test examples: their test sets cannot be resampled together")
    rng = np.random.default_rng(seed)
    elements = int(first.sizes.sum())
    chunk = max(1, CHUNK_ELEMENTS // max(elements, 1))
    out = []
    for start in range(0, resamples, chunk):
        counts = example_counts(len(first.sizes), min(chunk, resamples - start), rng)
        weights = np.repeat(counts, first.sizes, axis=1)
        out.append(np.stack([resample_weights_metric(run, weights) for run in runs]))
    metrics = np.concatenate(out, axis=1)
    return metrics[:, np.isfinite(metrics).all(0)]
