"""Batch statistics over every rank's rows: what makes a run on N processes regularise as one
process would on the N batches together.

SIGReg's empirical characteristic function and VICReg's mean and covariance are sums over
rows divided by a row count. Under DDP or FSDP each rank holds only its own rows, so while
training the regularisers sum those statistics over the ranks (an all-reduce) before dividing:
every rank then computes the loss of the global batch. The all-reduce carries gradients:
its backward sums over the ranks the gradients every rank's copy of the loss sends to this
rank's rows, and DDP's (or FSDP's) average of the ranks' gradients turns that into exactly the
gradient of the global batch's loss. In evaluation (the collapse monitor's held-out batch,
which every rank holds whole) and on one process the statistics are this process's rows.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def several_ranks() -> bool:
    """Whether this process is one of several ranks of a run (torch.distributed set up, world > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) that keeps the graph: the backward is the same all-reduce of the gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def batch_sum(statistic: Tensor, training: bool) -> Tensor:
    """``statistic``, a sum over this rank's rows, summed over every rank's rows while ``training``
    on several ranks (with gradients); as it is otherwise. Every rank must call it at the same place."""
    return _SumOverRanks.apply(statistic) if training and several_ranks() else statistic
