"""Evaluation metrics and probes against hand-computed values and scikit-learn."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from protjepa.evaluation.compare import CompareError, compare, load_results, plot, sign_test, to_markdown
from protjepa.evaluation.probes import (
    fit_logistic,
    logistic_scores,
    multiclass_metrics,
    ridge_predict,
    roc_auc,
    spearman,
    standardise,
)
from protjepa.evaluation.retrieval import first_hits, nearest_neighbours, recall_at_k, retrieval_metrics


def test_spearman_with_ties_by_hand():
    # truth ranks 1, 2, 3.5, 5, 3.5 against 1..5: rho = 8 / sqrt(10 * 9.5)
    assert spearman(np.array([1, 2, 3, 4, 5.0]), np.array([5, 6, 7, 8, 7.0])) == pytest.approx(8 / np.sqrt(95))
    assert spearman(np.array([3, 2, 1.0]), np.array([1, 2, 3.0])) == pytest.approx(-1)
    assert spearman(np.ones(4), np.arange(4.0)) is None  # constant predictions have no rank order


def test_roc_auc_by_hand():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered right
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1], bool)) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc(np.array([0.1, 0.2]), np.array([1, 1], bool)) is None


def test_multiclass_metrics_by_hand():
    truth = np.array(["a", "a", "b", "c"], dtype=object)
    predicted = np.array(["a", "b", "b", "c"], dtype=object)
    metrics = multiclass_metrics(predicted, truth)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # F1: a = 2/3 (precision 1, recall 1/2), b = 2/3 (1/2, 1), c = 1
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_ridge_is_standardise_then_closed_form():
    rng = np.random.default_rng(0)
    x, y, x_test = rng.normal(size=(40, 5)) * [1, 10, 0.1, 3, 1], rng.normal(size=40), rng.normal(size=(7, 5))
    xs, xts = standardise(x, x_test)
    xs, xts = xs.astype(np.float64), xts.astype(np.float64)
    weights = np.linalg.solve(xs.T @ xs + np.eye(5), xs.T @ (y - y.mean()))  # alpha 1; intercept = mean(y)
    np.testing.assert_allclose(ridge_predict(x, y, x_test), xts @ weights + y.mean(), atol=1e-5)


def _classification(n=240, d=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(d, k)) + rng.normal(size=(n, k))).argmax(1)
    return x, y


def test_one_vs_rest_logistic_matches_scikit_learn():
    x, y = _classification()
    xs, = standardise(x)
    # newton-cholesky converges to the optimum; scikit-learn 1.9's lbfgs stops ~2e-3 short of it
    reference = OneVsRestClassifier(LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-12)).fit(xs, y)
    xt = torch.tensor(xs, dtype=torch.float64)
    weight, bias = fit_logistic(xt, torch.nn.functional.one_hot(torch.tensor(y)).double(), max_iter=1000,
                                tolerance=1e-9)
    np.testing.assert_allclose((xt @ weight + bias).numpy(), reference.decision_function(xs), atol=1e-3)


def test_binary_logistic_matches_scikit_learn():
    x, y = _classification(k=2)
    scores = logistic_scores(x[:200], y[:200], x[200:], num_classes=2)
    xs, xts = standardise(x[:200], x[200:])
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(xs, y[:200])
    np.testing.assert_allclose(scores, reference.decision_function(xts), atol=2e-2)
    assert ((scores > 0) == reference.predict(xts)).mean() > 0.95


def test_nearest_neighbours_and_recall_by_hand():
    # Unit vectors at these angles (degrees); cosine order follows the angle difference.
    angles = np.radians([0, 10, 30, 100, 115, 180])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], 1) * [[1], [2], [3], [1], [5], [1]]  # norms do not count
    neighbours = nearest_neighbours(embeddings, k=2)
    assert neighbours.tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 5], [4, 3]]
    labels = np.array(["x", "y", "x", "y", "z", "w"], dtype=object)
    # counted queries: 0, 1, 2, 3 (z and w are alone). @1: 0->1 no, 1->0 no, 2->1 no, 3->4 no = 0/4.
    # @2: 0->{1,2} yes, 1->{0,2} no, 2->{1,0} yes, 3->{4,2} no = 2/4.
    counted, first_hit = first_hits(neighbours, labels)
    assert counted.tolist() == [True] * 4 + [False] * 2
    assert first_hit[[0, 2]].tolist() == [1, 1] and (first_hit[[1, 3]] > 2).all()  # 1 and 3 find no "y"
    assert recall_at_k(first_hit, [1, 2]) == {1: 0.0, 2: 0.5}


def test_retrieval_levels_truncate_the_label():
    embeddings = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    metrics, queries, hits = retrieval_metrics(embeddings, ["a.1.1.1", "a.1.2.1", "a.2.1.1", "b.1.1.1"],
                                               {"superfamily": 3, "fold": 2}, [1])
    assert hits["fold"][0].tolist() == [True, True, False, False] and hits["fold"][1].tolist() == [0, 0]
    assert queries == {"superfamily": 0, "fold": 2}
    assert metrics["fold_recall@1"] == 1.0 and np.isnan(metrics["superfamily_recall@1"])


def test_sign_test_by_hand():
    assert sign_test(10, 3) == pytest.approx(378 / 8192)  # the paper's 10/3/3: p = 0.046
    assert sign_test(11, 2) == pytest.approx(92 / 8192)  # 11/2/3: p = 0.011
    assert sign_test(3, 0) == pytest.approx(1 / 8)
    assert sign_test(0, 0) == 1.0


def _results(values: dict[str, float | None], **settings) -> dict:
    return {"settings": settings, "tasks": {t: {"metric": "spearman", "value": v} for t, v in values.items()}}


def test_compare_counts_wins_losses_ties_with_the_tolerance(tmp_path):
    a = _results({"t1": 0.50, "t2": 0.40, "t3": 0.300, "t4": 0.7, "only_a": 0.1}, fast=True)
    b = _results({"t1": 0.45, "t2": 0.41, "t3": 0.304, "t4": None}, fast=False)
    result = compare(a, b, tie=0.005, name_a="jepa", name_b="mlm")
    assert [(r.task, r.outcome(0.005)) for r in result.rows] == [("t1", "W"), ("t2", "L"), ("t3", "T")]
    assert result.rows[0].delta == pytest.approx(0.05)
    assert result.p_value == pytest.approx(0.75)  # 1 win, 1 loss: P(X >= 1 of 2)
    assert any("only_a" in u for u in result.unmatched) and any("t4" in u for u in result.unmatched)
    assert result.warnings == ["probed with different fast: True (jepa) vs False (mlm)"]
    text = to_markdown(result)
    assert "| t1 | spearman | 0.5000 | 0.4500 | +0.0500 | W |" in text
    assert "1 wins / 1 losses / 1 ties" in text and "|delta| <= 0.005" in text
    png = plot(result, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_load_results_finds_the_file_in_a_run_folder(tmp_path):
    (tmp_path / "run" / "probe").mkdir(parents=True)
    (tmp_path / "run" / "probe" / "results.json").write_text(json.dumps(_results({"t": 0.1})))
    assert load_results(tmp_path / "run")["tasks"]["t"]["value"] == 0.1
    with pytest.raises(CompareError, match="no results.json"):
        load_results(tmp_path)
    (tmp_path / "bad.json").write_text("{\n oops")
    with pytest.raises(CompareError, match=r"bad.json:2: not valid JSON"):
        load_results(tmp_path / "bad.json")
