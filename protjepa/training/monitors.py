"""Collapse monitors on a fixed held-out batch.

* ``monitor/embed_std``: per-dimension std, across sequences, of the L2-normalised
  mean-pooled embeddings, averaged over dimensions (SimSiam's collapse check; 0 when
  every sequence maps to one direction, about 1/sqrt(D) when they spread evenly).
* ``monitor/effective_rank``: exp of the entropy of the normalised singular values of the
  mean-pooled embeddings (RankMe, Garrido et al. 2023; 1 for a single direction, up to
  min(sequences, D)).
* ``val/...``: the recipe's losses and metrics on the same batch, masked the same way
  every time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from composer.core import Callback, State, get_precision_context
from composer.loggers import Logger
from torch import Tensor

from protjepa.attention import AttentionLayout
from protjepa.batch import Batch, mean_pool
from protjepa.model import ProtJEPA
from protjepa.training.budget import BudgetTracker
from protjepa.training.composer_model import unwrap
from protjepa.training.finite import FirstNonFinite
from protjepa.training.parallel import gathered
from protjepa.training.runlog import RunLog


def embedding_std(pooled: Tensor) -> Tensor:
    """Mean over dimensions of the std across rows of the L2-normalised rows of ``pooled`` [S, D]."""
    return F.normalize(pooled.float(), dim=-1).std(dim=0).mean()


def effective_rank(pooled: Tensor) -> Tensor:
    """exp(entropy) of the singular values of ``pooled`` [S, D], normalised to sum to 1."""
    singular = torch.linalg.svdvals(pooled.float())
    p = singular / singular.sum().clamp_min(torch.finfo(torch.float32).tiny)
    return torch.special.entr(p).sum().exp()


@torch.no_grad()
def collapse_metrics(model: ProtJEPA, batch: Batch, check_latent: bool = False) -> dict[str, Tensor]:
    """The monitors and the held-out losses of ``model`` on ``batch`` (already on its device); with
    ``check_latent``, first a one-line error for a latent objective that does not give what the run's
    summary and readout read of it (:meth:`ProtJEPA.check_latent_contract`)."""
    was_training = model.training
    model.eval()
    try:
        clean = model.encoder(batch.tokens, batch.padding_mask, layout=AttentionLayout.from_batch(batch))
        pooled = mean_pool(clean.last, batch)
        ctx = model.context(batch)
        out = model.losses(ctx)
        if check_latent:
            model.check_latent_contract(ctx, out.metrics)
    finally:
        model.train(was_training)
    metrics = {"monitor/embed_std": embedding_std(pooled), "monitor/effective_rank": effective_rank(pooled)}
    metrics.update({f"val/{k}": v for k, v in out.metrics.items()})
    return metrics


class CollapseMonitor(Callback):
    """Runs :func:`collapse_metrics` before the first step (checking the latent objectives there: a broken
    one stops the run before it trains), every ``every`` steps, and at the end.

    It runs between batches, so the training clock (stopped at ``BATCH_END``) does not count it.
    """

    def __init__(self, batch: Batch, every: int, tracker: BudgetTracker, log: RunLog, non_finite: FirstNonFinite):
        self.non_finite = non_finite  # checked first: the SVD of non-finite embeddings fails
        self.batch = batch
        self.every = every
        self.tracker = tracker
        self.log = log
        self._last_step: int | None = None

    def fit_start(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) == 0:
            self._measure(state, logger, check_latent=True)

    def batch_end(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) % self.every == 0:
            self._measure(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._last_step != int(state.timestamp.batch):
            self._measure(state, logger)

    def _measure(self, state: State, logger: Logger, check_latent: bool = False) -> None:
        model = unwrap(state.model)
        self.non_finite.check(model, int(state.timestamp.batch))
        self.batch = self.batch.to(model.encoder.device)
        # Every rank measures the same batch (under FSDP with the whole weights gathered): they agree.
        with get_precision_context(state.precision, state.precision_config), gathered(model):
            metrics = collapse_metrics(model, self.batch, check_latent)
        values = dict(zip(metrics, torch.stack([v.float() for v in metrics.values()]).tolist()))  # one sync
        self._last_step = int(state.timestamp.batch)
        self.log.write("monitor", state, self.tracker, values, logger)
