"""The fixed batches rows read: drawn from the real corpus, moved to the device before any clock starts."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch
from torch import Tensor

from protjepa.batch import Batch
from protjepa.data.corpus import make_corpus
from protjepa.flops import BatchCounts
from protjepa.recipe import Recipe


@dataclass
class Prepared:
    """A batch on the device, with what the clocks and FLOP counts need, computed on the host."""

    batch: Batch
    tokens: int  # non-padding tokens: what tokens/s counts
    counts: BatchCounts | None  # the sizes model FLOPs are counted from; None: rows that count none
    peer_inputs: dict[str, Tensor]  # transformers' input_ids, attention_mask, labels (-100 off the selection)


def prepare(batch: Batch, device: torch.device) -> Prepared:
    labels = torch.full((batch.tokens.numel(),), -100, dtype=torch.long)
    selected = batch.masked_index[:batch.num_masked]  # static shapes' filler follows the selection
    labels[selected] = batch.tokens.flatten()[selected]
    peer_inputs = dict(input_ids=batch.inputs, attention_mask=(~batch.padding_mask).long(),
                       labels=labels.view_as(batch.tokens))
    counts = BatchCounts.of(batch)
    return Prepared(
        batch=batch.to(device, non_blocking=False),
        tokens=counts.tokens,
        counts=counts,
        peer_inputs={k: v.to(device) for k, v in peer_inputs.items()},
    )


def corpus_batches(recipe: Recipe, crop: int, budget: int, packing: bool, count: int, device: torch.device,
                   data_root: str | None, static_shapes: bool = False) -> list[Prepared]:
    """The first ``count`` batches of the recipe's training corpus at ``crop``, under a budget of
    ``budget`` tokens (padding included), padded or packed (``static_shapes``: packed, every batch the
    same shapes), as the trainer's data would be."""
    data = recipe.data.model_copy(update=dict(crop=crop, batch_tokens=budget, packing=packing or static_shapes,
                                              static_shapes=static_shapes, num_workers=0))
    corpus = make_corpus(data, recipe.masking, "train", seed=recipe.seed, root=data_root)
    return [prepare(b, device) for b in islice(corpus, count)]
