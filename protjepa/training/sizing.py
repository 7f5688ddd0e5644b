"""Tokens per step that fill a GPU's memory.

A training step holds the model's state (fp32 weights, gradients and AdamW's two moments: 16
bytes a trainable parameter, 4 a frozen one such as the EMA teacher's) and what autograd saves
for the backward, which grows with the batch's tokens. The second is counted, not modelled:
every tensor the forward saves (``saved_tensors_hooks``; storages counted once), for the same
model on the same device and precision, at one row and at two rows of full-length sequences.
Their difference is the cost of one row; what both share (autocast's weight casts) is the
step's fixed cost. ``MEMORY_FRACTION`` of the GPU is planned for, the rest left to the
backward's transients and the allocator.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass

import torch

from protjepa.alphabet import STANDARD_AMINO_ACIDS
from protjepa.batch import Batch, row_tokens
from protjepa.data.collate import Collator
from protjepa.model import ProtJEPA
from protjepa.precision import bf16_autocast
from protjepa.recipe import Recipe

MEMORY_FRACTION = 0.75
ADAMW_BYTES = 16  # fp32 weight, gradient, exp_avg, exp_avg_sq
DDP_BUCKET_BYTES = 4  # DDP's fp32 copy of each gradient, for its all-reduce


@dataclass(frozen=True)
class StepMemory:
    """What one training step of a recipe holds, in bytes."""

    state: int  # weights, gradients, optimizer moments
    fixed: int  # saved for the backward whatever the batch (autocast's weight casts)
    per_row: int  # saved for the backward per row of ``row`` tokens
    row: int  # tokens of one row (padding included)

    def tokens_that_fit(self, memory: int, fraction: float = MEMORY_FRACTION, held: int | None = None) -> int:
        """The largest whole number of rows' tokens whose step fits ``fraction`` of ``memory``; 0: not one row.
        ``held``: the state the process holds in place of this step's own (a bench suite holds every
        row's model, weights, gradients and moments)."""
        state = self.state if held is None else held
        rows = math.floor((fraction * memory - state - self.fixed) / self.per_row)
        return max(rows, 0) * self.row

    def describe(self, memory: int, fraction: float = MEMORY_FRACTION, held: int | None = None) -> str:
        gib = 2 ** 30
        state = f"state {self.state / gib:.2f} GiB" if held is None else \
            f"state {self.state / gib:.2f} GiB, {held / gib:.2f} GiB held in all"
        return (f"{self.tokens_that_fit(memory, fraction, held)} tokens a step fill {fraction:.0%} of "
                f"{memory / gib:.1f} GiB: "
                f"{state}, {self.per_row / self.row / 2 ** 10:.0f} KiB saved per token "
                f"(+{self.fixed / gib:.2f} GiB fixed)")


def state_bytes(model: ProtJEPA, ddp: bool = False) -> int:
    """Weights, gradients and AdamW moments; ``ddp``: DDP's gradient buckets too (4 bytes a trainable parameter)."""
    per_trainable = ADAMW_BYTES + (DDP_BUCKET_BYTES if ddp else 0)
    return sum(p.numel() * (per_trainable if p.requires_grad else p.element_size()) for p in model.parameters())


def full_rows(recipe: Recipe, model: ProtJEPA, rows: int) -> Batch:
    """``rows`` sequences of ``data.crop`` random residues each (the longest a batch holds), masked as
    the recipe masks, one row each (packed rows hold one such sequence, too)."""
    alphabet = model.encoder.alphabet
    rng = random.Random(0)
    sequences = [alphabet.encode("".join(rng.choices(STANDARD_AMINO_ACIDS, k=recipe.data.crop))) for _ in range(rows)]
    packing = recipe.data.packing
    collate = Collator(alphabet, recipe.masking, packing, row_tokens(recipe.data.crop, packing) if packing else None)
    return collate(sequences)


def saved_bytes(model: ProtJEPA, batch: Batch, bf16: bool) -> int:
    """Bytes of the tensors one training forward saves for its backward (parameters excluded)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor), bf16_autocast(
            batch.tokens.device, bf16):
        model(batch)
    return sum(saved.values())


def step_memory(recipe: Recipe, model: ProtJEPA, device: torch.device, bf16: bool, ddp: bool = False) -> StepMemory:
    """Count ``model``'s step memory on ``device`` (it must be there, in training mode); ``ddp``: its state
    with DDP's gradient buckets."""
    one, two = (saved_bytes(model, full_rows(recipe, model, n).to(device), bf16) for n in (1, 2))
    return StepMemory(state_bytes(model, ddp), fixed=2 * one - two, per_row=two - one,
                      row=row_tokens(recipe.data.crop, recipe.data.packing))


def tokens_that_fill(recipe: Recipe, model: ProtJEPA, device: torch.device, memory: int, bf16: bool,
                     ddp: bool = False) -> tuple[int, str]:
    """``data.batch_tokens: fill``: the tokens a step of ``recipe`` may take to fill ``memory`` bytes of
    ``device`` (a GPU's free memory), counted on a copy of ``model`` there, and the line that says so;
    ``ddp``: beside DDP's gradient buckets. ``model``, its device and the random streams are left as
    they were (the run's first steps are those of the same recipe with the number given)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        counted = step_memory(recipe, copy.deepcopy(model).to(device).train(), device, bf16, ddp)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the copy's blocks, back to the GPU before the run's own model arrives
    return counted.tokens_that_fit(memory), f"data.batch_tokens fill: {counted.describe(memory)}"
