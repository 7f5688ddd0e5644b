"""Per-example outputs (protjepa.evaluation.examples): a weighted sample's metric is the metric of
the sample drawn out in full (checked against scipy and scikit-learn), whole proteins are drawn,
and the bootstrap variance of a paired accuracy difference is the textbook one."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from protjepa.evaluation.examples import (
    ExamplesError,
    TaskExamples,
    example_counts,
    read_examples,
    resample_weights_metric,
    resampled_metrics,
    task_examples,
    write_examples,
)


def _examples(kind: str, output, truth=None, sizes=None, identity: str = "same") -> TaskExamples:
    output = np.asarray(output, dtype=np.float64)
    sizes = np.ones(len(output), dtype=np.int64) if sizes is None else np.asarray(sizes, dtype=np.int64)
    return TaskExamples(kind, output, None if truth is None else np.asarray(truth, dtype=np.float64), sizes, identity)


@pytest.mark.parametrize("kind", ["mean", "spearman", "pearson", "auc"])
def test_a_weighted_sample_scores_as_the_sample_written_out(kind):
    rng = np.random.default_rng(1)
    n = 40
    output = rng.integers(0, 6, n).astype(float)  # few values: ties in every metric
    truth = {"mean": None, "auc": (rng.random(n) < 0.4).astype(float)}.get(kind, rng.integers(0, 8, n).astype(float))
    if kind == "mean":
        output = (output > 2).astype(float)
    examples = _examples(kind, output, truth)
    counts = example_counts(n, 25, rng)
    found = resample_weights_metric(examples, counts)
    for row, weights in enumerate(counts):
        take = np.repeat(np.arange(n), weights.astype(int))
        o = output[take]
        expected = {"mean": lambda: o.mean(),
                    "spearman": lambda: stats.spearmanr(o, truth[take]).statistic,
                    "pearson": lambda: stats.pearsonr(o, truth[take]).statistic,
                    "auc": lambda: roc_auc_score(truth[take], o)}[kind]()
        assert found[row] == pytest.approx(expected, abs=1e-12), row


def test_examples_of_a_per_residue_task_are_drawn_by_protein():
    # three proteins of 2, 1 and 3 labelled residues; drawing protein 0 twice draws both its residues twice
    examples = _examples("mean", [1, 0, 1, 1, 0, 0], sizes=[2, 1, 3])
    assert examples.metric == pytest.approx(0.5)
    counts = np.array([[2.0, 0.0, 1.0]])
    weights = np.repeat(counts, examples.sizes, axis=1)
    assert weights.tolist() == [[2, 2, 0, 1, 1, 1]]
    assert resample_weights_metric(examples, weights)[0] == pytest.approx(3 / 7)  # 1 of 2 right twice, 1 of 3: 3 of 7


def test_examples_that_do_not_line_up_are_refused():
    with pytest.raises(ExamplesError, match="do not line up"):
        _examples("mean", [1, 0, 1], sizes=[1, 1])
    with pytest.raises(ExamplesError, match="kind 'median'"):
        _examples("median", [1.0])
    with pytest.raises(ExamplesError, match="different test examples"):
        resampled_metrics([_examples("mean", [1, 0]), _examples("mean", [1, 0], identity="other")], 10, 0)


def test_bootstrap_variance_of_a_paired_accuracy_difference_is_the_textbook_one():
    # Two runs over N examples: b examples only A gets right, c only B. The paired difference's
    # variance under resampling is (b + c - (b - c)^2 / N) / N^2 (McNemar's setting).
    n, b, c = 200, 30, 18
    a = np.r_[np.ones(b), np.zeros(c), np.ones(60), np.zeros(n - b - c - 60)]
    bb = np.r_[np.zeros(b), np.ones(c), np.ones(60), np.zeros(n - b - c - 60)]
    metrics = resampled_metrics([_examples("mean", a), _examples("mean", bb)], 20_000, seed=0)
    variance = np.var(metrics[0] - metrics[1], ddof=1)
    assert variance == pytest.approx((b + c - (b - c) ** 2 / n) / n**2, rel=0.03)


def test_examples_round_trip_through_their_file_without_pickle(tmp_path):
    sequences = ["MKV", "MKL", "AAA"]
    scored = task_examples("spearman", sequences, np.ones(3), prediction=np.array([0.1, 0.5, 0.2]),
                           truth=np.array([1.0, 3.0, 2.0]))
    accuracy = task_examples("accuracy", sequences, np.ones(3), prediction=np.array(["a", "b", "a"], dtype=object),
                             truth=np.array(["a", "a", "a"], dtype=object))
    assert task_examples("macro_f1", sequences, np.ones(3), prediction=None, truth=None) is None
    path = write_examples({"reg": scored, "cls": accuracy}, tmp_path / "examples.npz")
    back = read_examples(path, {"reg": scored.summary(), "cls": accuracy.summary()})
    assert back["reg"].metric == pytest.approx(1.0) and back["cls"].metric == pytest.approx(2 / 3)
    assert back["reg"].identity == accuracy.identity  # the same sequences in the same order pair
    with pytest.raises(ExamplesError, match="cls: the arrays do not match"):
        read_examples(path, {"cls": {**accuracy.summary(), "examples": 4}})
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ExamplesError, match="broken.npz: not readable"):
        read_examples(tmp_path / "broken.npz", {"reg": scored.summary()})
