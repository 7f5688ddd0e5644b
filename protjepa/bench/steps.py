"""What one row runs per batch: a training step as the trainer takes it (ours or transformers'
ESM), the no-grad target pass alone, or the encoder alone."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.profiler import record_function

from protjepa.attention import AttentionLayout
from protjepa.bench.batches import Prepared
from protjepa.bench.config import BenchError, Dtype
from protjepa.bench.profile import OPTIMIZER_SCOPE
from protjepa.encoders.base import Encoder
from protjepa.model import ProtJEPA
from protjepa.objectives.base import latent_scores
from protjepa.objectives.mlm import unigram_entropy
from protjepa.precision import bf16_autocast
from protjepa.recipe import OptimConfig
from protjepa.training.trainer import build_optimizer


class OptimizerStep:
    """``loss(prepared)`` under the row's autocast, backward, gradient clipping, the trainer's
    AdamW step (its parameter groups: no weight decay on 1-D parameters), then ``after_step()``.
    ``cuda_graphs``: the loss comes from CUDA graphs' replays; each step is marked as the trainer's
    are (``CudaGraphSteps``), so that a replay may reuse the step before's outputs."""

    def __init__(self, module: torch.nn.Module, loss: Callable[[Prepared], Tensor], optim: OptimConfig,
                 device: torch.device, dtype: Dtype, after_step: Callable[[], None] | None = None,
                 cuda_graphs: bool = False):
        self.loss = loss
        self.cuda_graphs = cuda_graphs
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(module, optim)
        self.grad_clip = optim.grad_clip
        self.device = device
        self.bf16 = dtype == "bf16"
        self.after_step = after_step

    def __call__(self, prepared: Prepared) -> None:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with bf16_autocast(self.device, self.bf16):
            loss = self.loss(prepared)
        loss.backward()
        with record_function(OPTIMIZER_SCOPE):  # what the profile's optimizer share counts
            if self.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.after_step is not None:
                self.after_step()


def model_step(model: ProtJEPA, optim: OptimConfig, device: torch.device, dtype: Dtype,
               cuda_graphs: bool = False) -> OptimizerStep:
    """A ProtJEPA training step (``model`` compiled or not); the EMA teacher (if any) moves at its
    mid-budget momentum."""
    after = None
    if model.teacher is not None:
        momentum = model.momentum_at(0.5)
        after = lambda: model.ema_update(momentum)  # noqa: E731
    return OptimizerStep(model.train(), lambda p: model(p.batch).loss, optim, device, dtype, after, cuda_graphs)


def esm_config(encoder_sizes: dict[str, int]):
    """``transformers.EsmConfig`` with ESM-2's published settings at these sizes."""
    try:
        from transformers import EsmConfig
    except ImportError as exc:
        raise BenchError(f"the peer needs transformers ({exc}); pass --no-peer to skip it") from None
    d = encoder_sizes["embed_dim"]
    return EsmConfig(
        vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=d, intermediate_size=4 * d,
        num_hidden_layers=encoder_sizes["num_layers"], num_attention_heads=encoder_sizes["attention_heads"],
        position_embedding_type="rotary", token_dropout=True, layer_norm_eps=1e-5, emb_layer_norm_before=False,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=1026,
    )


def peer_model(encoder_sizes: dict[str, int], device: torch.device):
    """``transformers.EsmForMaskedLM`` of these sizes, in training mode."""
    from transformers import EsmForMaskedLM

    return EsmForMaskedLM(esm_config(encoder_sizes)).to(device).train()


def peer_step(peer, optim: OptimConfig, device: torch.device, dtype: Dtype) -> OptimizerStep:
    """The peer's training step: its own MLM loss, on labels that are -100 off the selected positions."""
    return OptimizerStep(peer, lambda p: peer(**p.peer_inputs).loss, optim, device, dtype)


def target_forward(encoder: Encoder, depth: int, device: torch.device, dtype: Dtype) -> Callable[[Prepared], None]:
    """The JEPA target pass alone: the unmasked tokens, no grad, stopped at ``depth``."""

    def run(p: Prepared) -> None:
        with torch.no_grad(), bf16_autocast(device, dtype == "bf16"):
            encoder(p.batch.tokens, p.batch.padding_mask, layout=AttentionLayout.from_batch(p.batch),
                    layers=(depth,), stop_at=depth)

    return run


def encoder_pass(encoder: Encoder, backward: bool, device: torch.device, dtype: Dtype) -> Callable[[Prepared], None]:
    """The encoder on the corrupted inputs: a no-grad forward, or a forward and a backward."""

    def run(p: Prepared) -> None:
        with torch.set_grad_enabled(backward), bf16_autocast(device, dtype == "bf16"):
            out = encoder(p.batch.inputs, p.batch.padding_mask, layout=AttentionLayout.from_batch(p.batch))
        if backward:
            out.last.float().square().mean().backward()
            encoder.zero_grad(set_to_none=True)

    return run


def latent_metrics(width: int, vocabulary: int, device: torch.device) -> Callable[[Prepared], None]:
    """What the objectives compute to set their scores beside a constant prediction's, alone: the
    latent scores on the step's masked rows (float32, as the JEPA objective computes them) and the
    unigram entropy of their labels. Its time over a step's is what those metrics cost."""
    rows: dict[str, Tensor] = {}

    def run(p: Prepared) -> None:
        n = p.batch.masked_index.numel()
        if "pred" not in rows or rows["pred"].shape[0] < n:  # row values do not change the work: made once
            rows["pred"], rows["target"] = torch.randn(2, n, width, device=device).unbind(0)
        latent_scores(rows["pred"][:n], rows["target"][:n], r2=False)
        unigram_entropy(p.batch.tokens.flatten().index_select(0, p.batch.masked_index), vocabulary)

    return run
