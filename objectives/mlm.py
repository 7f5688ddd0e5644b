"""Masked language modelling: cross-entropy of the LM head at the selected positions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from protjepa.batch import gather_positions, row_mean
from protjepa.encoders.base import Encoder
from protjepa.flops import FORWARD_BACKWARD, BatchCounts
from protjepa.objectives.base import Objective, ObjectiveConfig, ObjectiveError, ObjectiveOutput, StepContext
from protjepa.registry import register_objective


def unigram_entropy(labels: Tensor, vocabulary: int, weight: Tensor | None = None) -> Tensor:
    """Entropy (nats) of the labels' own frequencies: the cross-entropy of the best constant
    prediction, the yardstick an MLM loss must get under to have learned more than composition.
    ``weight`` [N]: each label's count (0 for the filler of static shapes)."""
    counts = labels.new_zeros(vocabulary, dtype=torch.float32)
    ones = torch.ones_like(labels, dtype=torch.float32) if weight is None else weight.float()
    counts.index_add_(0, labels, ones)  # no bincount: it syncs
    return torch.special.entr(counts / counts.sum().clamp_min(1)).sum()


class MLMConfig(ObjectiveConfig):
    """No options: the positions are the collator's selection (``masking:`` in the recipe)."""


@register_objective("mlm", config=MLMConfig)
class MLM(Objective):
    """Masked-token cross-entropy of the encoder's LM head at the selected positions."""

    weighs_masked_rows = True

    def __init__(self, config: MLMConfig, encoder: Encoder, id: str):
        super().__init__(config, encoder, id)
        if not encoder.has_lm_head:
            raise ObjectiveError(f"objectives: {id}: {type(encoder).__name__} has no LM head to train with MLM")

    def flops(self, counts: BatchCounts, rows: dict[str, int], encoder: Encoder) -> float | None:
        head = encoder.lm_head_flops(counts.masked)
        return None if head is None else FORWARD_BACKWARD * head

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        batch = ctx.batch
        # Gather before the head: only the selected positions are projected to the vocabulary.
        hidden = gather_positions(ctx.student.last, batch.masked_index)
        logits = ctx.encoder.lm_head(hidden).float()
        labels = gather_positions(batch.tokens, batch.masked_index)
        weight = batch.masked_weight
        loss = row_mean(F.cross_entropy(logits, labels, reduction="none"), weight)
        accuracy = row_mean((logits.detach().argmax(-1) == labels).float(), weight)
        return ObjectiveOutput(loss, {"accuracy": accuracy, "perplexity": loss.detach().exp(),
                                      "unigram_entropy": unigram_entropy(labels, logits.shape[-1], weight)})
