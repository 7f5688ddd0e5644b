"""Model FLOPs of a training step, counted from the shapes the step runs.

One count for the trainer's FLOP budget (``budget: {flops: ...}``) and the benchmark's
TFLOP/s and MFU. Only matrix products count, at ``2 x m x n x k`` each; the batch's sizes
come from :class:`BatchCounts`, host-side numbers the collator already has, so counting
never asks the device. Each encoder and objective declares the count of its own modules
(``Encoder.forward_flops``, ``Objective.flops``); :meth:`protjepa.model.ProtJEPA.flop_parts`
adds them up.
"""
from __future__ import annotations

from dataclasses import dataclass

from protjepa.batch import Batch

# A trained pass costs three forwards: the backward computes gradients of the inputs and of the weights.
FORWARD_BACKWARD = 3.0


@dataclass(frozen=True)
class BatchCounts:
    """The sizes of one batch that FLOPs depend on; padding never counts."""

    tokens: int  # non-padding tokens, <cls>/<eos> included
    attention_pairs: int  # (query, key) pairs of non-padding tokens of one sequence: sum of length^2
    masked: int  # positions selected for prediction
    residues: int  # real residues (no <cls>/<eos>)
    sequences: int

    @classmethod
    def of(cls, batch: Batch) -> "BatchCounts":
        # Host-side ints and tensor shapes only: no device sync.
        rows, length = batch.shape
        return cls(rows * length - batch.num_padding, batch.attention_pairs, batch.num_masked,
                   batch.residue_index.numel(), batch.num_sequences)


def linear(rows: int, fan_in: int, fan_out: int) -> float:
    """A [rows, fan_in] x [fan_in, fan_out] product (a bias-free or biased nn.Linear)."""
    return 2.0 * rows * fan_in * fan_out


def attention(pairs: int, width: int) -> float:
    """Scores ``q k^T`` and ``probabilities x v`` over ``pairs`` attending pairs, all heads
    together ``width`` wide (heads x head size): 2 x width FLOPs a pair each."""
    return 4.0 * pairs * width
