"""Latent prediction (JEPA): a predictor maps the student's hidden states to the hidden
states of a stop-gradient target pass over the unmasked sequence, at the selected
positions (the paper's masked-position variant) or at every residue (its control).

Targets come from the student's own weights (paper v1) or an EMA teacher (v2, I-JEPA),
at the last layer or an earlier one (``half``: v2's mid-depth target).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_serializer, model_validator
from torch import Tensor, nn

from protjepa.attention import AttentionLayout, attend
from protjepa.batch import Batch, gather_positions, row_mean, row_std
from protjepa.encoders.base import Encoder
from protjepa.flops import FORWARD_BACKWARD, BatchCounts, attention, linear
from protjepa.objectives.base import (
    LatentRows,
    LatentScore,
    LayerSpec,
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    StepContext,
    TargetRequest,
    TargetSource,
    latent_scores,
)
from protjepa.registry import register_objective

LatentLoss = Literal["cosine", "mse", "smooth_l1"]
ScoreChoice = Literal["auto", "lift", "r2"]


class TargetConfig(ObjectiveConfig):
    source: TargetSource = Field("student", description="student: same weights, no grad; ema: an EMA teacher")
    layer: LayerSpec = "last"
    momentum: float = Field(0.996, ge=0, le=1, description="EMA momentum at the start (source: ema)")
    momentum_end: float = Field(1.0, ge=0, le=1, description="EMA momentum at the end, linear in between")

    @model_validator(mode="after")
    def _rising(self):
        if self.momentum > self.momentum_end:
            raise ValueError(f"momentum {self.momentum} must not exceed momentum_end {self.momentum_end}")
        return self


TRANSFORMER_ONLY = ("layers", "heads", "width")


class PredictorConfig(ObjectiveConfig):
    kind: Literal["mlp", "transformer"] = "mlp"
    hidden_mult: float = Field(8 / 3, gt=0, description="SwiGLU hidden size / width")
    layers: int = Field(2, ge=1, description="transformer blocks (kind: transformer)")
    heads: int = Field(4, ge=1, description="attention heads (kind: transformer)")
    width: int | None = Field(None, ge=2, description="transformer width (default: half the encoder's)")

    @model_validator(mode="after")
    def _transformer_only(self):
        if self.kind == "mlp":
            extra = sorted(set(TRANSFORMER_ONLY) & self.model_fields_set)
            if extra:
                raise ValueError(f"{', '.join(extra)}: only used by kind: transformer")
        elif self.width is not None and self.width % (2 * self.heads):
            raise ValueError(f"width {self.width} must be a multiple of 2 x heads ({2 * self.heads})")
        return self

    @model_serializer(mode="wrap")
    def _mlp_without_transformer_fields(self, handler):
        data = handler(self)
        if self.kind == "mlp":  # a resolved recipe loads back: these are errors beside kind: mlp
            for key in TRANSFORMER_ONLY:
                data.pop(key, None)
        return data


class JEPAConfig(ObjectiveConfig):
    positions: Literal["masked", "all"] = Field("masked", description="masked: the selected positions; all: every residue")
    loss: LatentLoss = "cosine"
    normalize: bool = Field(True, description="LayerNorm without affine on prediction and target")
    target: TargetConfig = Field(default_factory=TargetConfig)
    student_layer: LayerSpec = Field("last", description="the student depth fed to the predictor")
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    score: ScoreChoice = Field(
        "auto", description="the latent score that says whether the term learns: lift (any loss) or r2 (mse, "
                            "smooth_l1); auto: lift for cosine, r2 otherwise")

    @model_validator(mode="after")
    def _score_the_loss_has(self):
        if self.score == "r2" and self.loss == "cosine":
            raise ValueError("score r2 needs loss mse or smooth_l1: a cosine loss leaves the predictions' scale free")
        return self

    @property
    def score_metric(self) -> str:
        """The metric (of :func:`~protjepa.objectives.base.latent_scores`) that says whether this latent term learns."""
        if self.score != "auto":
            return self.score
        return "lift" if self.loss == "cosine" else "r2"


def latent_loss(pred: Tensor, target: Tensor, kind: LatentLoss, weight: Tensor | None = None) -> Tensor:
    """cosine: mean(1 - cos) over rows; mse / smooth_l1 (beta 1): mean over all elements; the rows
    weighted by ``weight`` [N] when given (0: filler)."""
    if kind == "cosine":
        return row_mean(1 - F.cosine_similarity(pred, target, dim=-1), weight)
    if weight is None:
        return F.mse_loss(pred, target) if kind == "mse" else F.smooth_l1_loss(pred, target)
    per_row = F.mse_loss(pred, target, reduction="none") if kind == "mse" else \
        F.smooth_l1_loss(pred, target, reduction="none")
    return row_mean(per_row.mean(-1), weight)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``, no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def flops(self, rows: int) -> float:
        return 2 * linear(rows, self.w1.in_features, self.w1.out_features) + linear(rows, self.w2.in_features,
                                                                                    self.w2.out_features)


class MLPPredictor(nn.Module):
    """Per-token SwiGLU MLP (the paper's predictor); runs on the gathered rows only."""

    def __init__(self, dim: int, cfg: PredictorConfig):
        super().__init__()
        self.mlp = SwiGLU(dim, round(cfg.hidden_mult * dim))

    def forward(self, hidden: Tensor, index: Tensor, batch: Batch, layout: AttentionLayout) -> Tensor:
        return self.mlp(gather_positions(hidden, index))

    def flops(self, counts: BatchCounts, predicted: int) -> float:
        """Forward matmul FLOPs with ``predicted`` rows gathered."""
        return self.mlp.flops(predicted)


def sinusoid(positions: Tensor, width: int) -> Tensor:
    """Fixed sin-cos position embeddings [..., width] (I-JEPA's predictor uses these too)."""
    freqs = torch.exp(torch.arange(0, width, 2, device=positions.device) * (-math.log(10000.0) / width))
    angles = positions.unsqueeze(-1).float() * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PredictorBlock(nn.Module):
    """Pre-LayerNorm bidirectional self-attention and SwiGLU."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = SwiGLU(width, hidden)

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = attend(q * q.shape[-1] ** -0.5, k, v, layout)  # within each sequence
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, w))
        return x + self.mlp(self.mlp_norm(x))


class TransformerPredictor(nn.Module):
    """I-JEPA style: project to a narrow width, put a learned mask token at the selected
    positions, run a few blocks over the whole sequence, project back, then gather."""

    def __init__(self, dim: int, cfg: PredictorConfig):
        super().__init__()
        width = cfg.width or max(2 * cfg.heads, dim // 2 // (2 * cfg.heads) * (2 * cfg.heads))
        self.width = width
        self.embed = nn.Linear(dim, width, bias=False)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
        hidden = round(cfg.hidden_mult * width)
        self.blocks = nn.ModuleList(PredictorBlock(width, cfg.heads, hidden) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, dim, bias=False)

    def forward(self, hidden: Tensor, index: Tensor, batch: Batch, layout: AttentionLayout) -> Tensor:
        b, n, _ = hidden.shape
        selected = torch.zeros(b * n, dtype=torch.bool, device=hidden.device)
        selected = selected.index_fill_(0, batch.masked_index, True)
        if batch.masked_weight is not None:  # static shapes' filler points at position 0, a <cls>: not selected
            selected[0] = False
        selected = selected.view(b, n, 1)
        x = self.embed(hidden)
        x = torch.where(selected, self.mask_token.to(x.dtype), x)
        positions = batch.positions if batch.positions is not None else torch.arange(n, device=hidden.device)
        x = x + sinusoid(positions, self.width).to(x.dtype)
        for block in self.blocks:
            x = block(x, layout)
        return self.head(gather_positions(self.norm(x), index))

    def flops(self, counts: BatchCounts, predicted: int) -> float:
        """Forward matmul FLOPs: the blocks run over every (non-padding) token, the head on the ``predicted`` rows."""
        t, w = counts.tokens, self.width
        block = linear(t, w, 3 * w) + linear(t, w, w) + attention(counts.attention_pairs, w)
        dim = self.embed.in_features
        return linear(t, dim, w) + sum(block + b.mlp.flops(t) for b in self.blocks) + linear(predicted, w, dim)


PREDICTORS = {"mlp": MLPPredictor, "transformer": TransformerPredictor}


@register_objective("jepa", config=JEPAConfig)
class JEPA(Objective):
    """Predict stop-gradient target hidden states (student or EMA) at masked or all positions."""

    weighs_masked_rows = True

    def __init__(self, config: JEPAConfig, encoder: Encoder, id: str):
        super().__init__(config, encoder, id)
        self.student_depth = self.resolve_layer(encoder, config.student_layer, "student_layer")
        self.target_depth = self.resolve_layer(encoder, config.target.layer, "target.layer")
        self.predictor = PREDICTORS[config.predictor.kind](encoder.embed_dim, config.predictor)
        self.ema_momentum = (
            (config.target.momentum, config.target.momentum_end) if config.target.source == "ema" else None
        )
        self.latent_score = LatentScore(config.score_metric)  # lift and r2: 0 for the best constant

    def student_layers(self) -> set[int]:
        return {self.student_depth}

    def target_requests(self) -> set[TargetRequest]:
        return {TargetRequest(self.config.target.source, self.target_depth)}

    @classmethod
    def static_shapes_problem(cls, config: JEPAConfig) -> str | None:
        if config.positions == "all":
            return "positions: all predicts every residue, a count that changes per batch"
        return super().static_shapes_problem(config)

    def predicted_index(self, batch: Batch) -> Tensor:
        """Flat indices of the rows it predicts: the selected positions, or every residue."""
        return batch.masked_index if self.config.positions == "masked" else batch.residue_index

    def normalized(self, x: Tensor) -> Tensor:
        """A prediction or target row as the loss compares it: float32, LayerNorm'd when ``normalize``."""
        x = x.float()
        return F.layer_norm(x, x.shape[-1:]) if self.config.normalize else x

    @classmethod
    def publishes(cls, config: JEPAConfig, id: str) -> set[str]:
        return {f"{id}.pred", f"{id}.target"}

    def predicted_rows(self, counts: BatchCounts) -> int:
        return counts.masked if self.config.positions == "masked" else counts.residues

    def published_rows(self, counts: BatchCounts) -> dict[str, int]:
        return dict.fromkeys(self.publishes(self.config, self.id), self.predicted_rows(counts))

    def flops(self, counts: BatchCounts, rows: dict[str, int], encoder: Encoder) -> float:
        return FORWARD_BACKWARD * self.predictor.flops(counts, self.predicted_rows(counts))

    def latent_metrics(self, predictions: Tensor, targets: Tensor, weight: Tensor | None = None) -> dict[str, Tensor]:
        return latent_scores(predictions, targets, weight, r2=self.config.loss != "cosine")

    def latent_rows(self, ctx: StepContext) -> LatentRows:
        index = self.predicted_index(ctx.batch)
        student = gather_positions(ctx.student_layer(self.student_depth), index).float()
        shared = ctx.shared
        return LatentRows(index, student, self.normalized(shared[f"{self.id}.pred"]),
                          self.normalized(shared[f"{self.id}.target"]))

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        cfg = self.config
        batch = ctx.batch
        index = self.predicted_index(batch)
        pred = self.predictor(ctx.student_layer(self.student_depth), index, batch, ctx.layout)
        target = gather_positions(ctx.target(cfg.target.source, self.target_depth), index)
        weight = batch.masked_weight if cfg.positions == "masked" else None
        ctx.publish(f"{self.id}.pred", pred, weight)
        ctx.publish(f"{self.id}.target", target, weight)
        pred, target = self.normalized(pred), self.normalized(target)
        loss = latent_loss(pred, target, cfg.loss, weight)
        pred, target = pred.detach(), target.detach()
        return ObjectiveOutput(
            loss,
            {
                **self.latent_metrics(pred, target, weight),
                "pred_std": row_std(pred, weight).mean(),
                "target_std": row_std(target, weight).mean(),
            },
        )
