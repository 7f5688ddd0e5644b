"""Linear probes on frozen embeddings and their metrics (the paper's protocol).

regression: standardise + ridge (alpha 1), Spearman. binary: standardise + logistic
regression (C 1), ROC-AUC. multiclass: standardise + one-vs-rest logistic regressions,
accuracy and macro-F1. Per-residue tasks fit the same probes with one row per residue.

The logistic regressions are fitted together in torch with L-BFGS: one column per class,
each column exactly scikit-learn's ``LogisticRegression(C=1)`` objective (L2 on the weights,
not the intercept), so 1,195 one-vs-rest problems cost one matrix product per step.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.linear_model import Ridge
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every column to the train set's mean 0 and variance 1 (constant columns left at 0)."""
    scaler = StandardScaler().fit(train)
    return [scaler.transform(x).astype(np.float32) for x in (train, *others)]


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    return model.fit(x_train, y_train).predict(x_test)


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, c: float = 1.0, max_iter: int = 200, tolerance: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent L2 logistic regressions, one per column of ``y`` ([N, K] in {0, 1}).

    Minimises, per column, ``0.5 |w|^2 + c * sum_i log(1 + exp(-s_i (w.x_i + b)))`` (divided
    by N, as scikit-learn does; the minimiser is the same). Stops after ``max_iter`` L-BFGS
    steps or when every gradient entry is below ``tolerance``. Returns ``W [D, K]``, ``b [K]``.
    """
    n, d = x.shape
    y = y.to(x.dtype)
    weight = torch.zeros(d, y.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    rate = y.mean(0).clamp(1e-6, 1 - 1e-6)
    bias = torch.log(rate / (1 - rate)).detach().requires_grad_(True)  # start at each class's base rate
    optimiser = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=tolerance, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        logits = torch.addmm(bias, x, weight)
        loss = (c * F.binary_cross_entropy_with_logits(logits, y, reduction="sum") + 0.5 * weight.square().sum()) / n
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(objective)
    return weight.detach(), bias.detach()


def logistic_scores(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Standardise, fit, and return test decision values: [N] for two classes (class 1), else [N, K]."""
    x_train, x_test = standardise(x_train, x_test)
    device = torch.device(device or "cpu")
    columns = 1 if num_classes == 2 else num_classes
    targets = torch.as_tensor(y_train, device=device).long()
    onehot = targets.unsqueeze(1).float() if columns == 1 else F.one_hot(targets, num_classes).float()
    weight, bias = fit_logistic(torch.as_tensor(x_train, device=device), onehot)
    scores = torch.addmm(bias, torch.as_tensor(x_test, device=device), weight).cpu().numpy()
    return scores[:, 0] if columns == 1 else scores


# --------------------------------------------------------------------------- metrics


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def spearman(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """Spearman's rho (average ranks for ties); None when either side is constant."""
    if np.ptp(prediction) == 0 or np.ptp(truth) == 0:
        return None
    return _finite(stats.spearmanr(prediction, truth).statistic)


def pearson(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    if np.ptp(prediction) == 0 or np.ptp(truth) == 0:
        return None
    return _finite(stats.pearsonr(prediction, truth).statistic)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None without both classes."""
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, scores))


def regression_metrics(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    return {"spearman": spearman(prediction, truth), "pearson": pearson(prediction, truth)}


def binary_metrics(scores: np.ndarray, positive: np.ndarray) -> dict[str, float | None]:
    return {"auc": roc_auc(scores, positive), "accuracy": float(((scores > 0) == positive).mean())}


def multiclass_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    return {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }
