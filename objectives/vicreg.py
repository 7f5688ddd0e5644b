"""VICReg's variance and covariance terms (Bardes, Ponce & LeCun 2022) as an anti-collapse
regulariser on any published tensor; the invariance term is the JEPA loss itself. On several
ranks (DDP, FSDP) the mean and covariance are those of every rank's rows while training."""
from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from protjepa.flops import linear
from protjepa.objectives.base import ObjectiveOutput, Regularizer, RegularizerConfig
from protjepa.objectives.ranks import batch_sum
from protjepa.registry import register_objective


class VICRegConfig(RegularizerConfig):
    variance_weight: float = Field(25.0, ge=0)
    covariance_weight: float = Field(1.0, ge=0)
    gamma: float = Field(1.0, gt=0, description="target standard deviation of every dimension")
    eps: float = Field(1e-4, gt=0)


def variance_covariance(x: Tensor, gamma: float = 1.0, eps: float = 1e-4, over_ranks: bool = False,
                        weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` [N, D] -> (mean_j relu(gamma - sqrt(var_j + eps)), sum of squared off-diagonal
    covariances / D, mean std); unbiased (N - 1) estimates, as in VICReg. ``over_ranks``: of
    every rank's rows, N their number (objectives/ranks.py; two all-reduces: the mean, then the
    centred products, as exact as on one process). ``weight`` [N]: the rows of weight 0 (static
    shapes' filler) left out, N the others' number."""
    d = x.shape[1]
    weight = x.new_ones(x.shape[0]) if weight is None else weight.to(x.dtype)
    weight = weight.unsqueeze(1)
    sums = batch_sum(torch.cat([(x * weight).sum(0), weight.sum(0)]), over_ranks)
    n = sums[-1]
    centered = x - sums[:-1] / n
    cov = batch_sum((centered * weight).T @ centered, over_ranks) / (n - 1).clamp_min(1)
    std = (cov.diagonal() + eps).sqrt()
    variance = torch.relu(gamma - std).mean()
    covariance = (cov.square().sum() - cov.diagonal().square().sum()) / d
    return variance, covariance, std.mean()


@register_objective("vicreg", config=VICRegConfig)
class VICReg(Regularizer):
    """VICReg variance + covariance penalty on a published tensor (default: jepa.pred)."""

    weighs_masked_rows = True

    def matmul_flops(self, rows: int, width: int) -> float:
        return linear(width, rows, width)  # the covariance, centered^T centered

    def regularize(self, x: Tensor, weight: Tensor | None = None) -> ObjectiveOutput:
        cfg = self.config
        variance, covariance, mean_std = variance_covariance(x, cfg.gamma, cfg.eps, self.training, weight)
        loss = cfg.variance_weight * variance + cfg.covariance_weight * covariance
        return ObjectiveOutput(
            loss, {"variance": variance.detach(), "covariance": covariance.detach(), "std": mean_std.detach()}
        )
