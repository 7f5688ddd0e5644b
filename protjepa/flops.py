"""Model FLOPs of a training step, counted from the shapes the step runs.

One count for the trainer's FLOP budget (``budget: {flops: ...}``) and the benchmark's
TFLOP/s and MFU. Only matrix products count, at ``2 x m x n x k`` each; the batch's sizes
come from :class:`BatchCounts`, host-side numbers the collator already has, so counting
never asks the device. Each encoder and objective declares the count of its own modules
(``Encoder.forward_flops``, ``Objective.flops``); :meth:`protjepa.model.ProtJEPA.flop_parts`
adds them up.

An encoder that declares no count (a ``_component_`` module, a plugin) is counted once instead by
torch's own ``FlopCounterMode`` (:func:`counted_flops`) on single sample sequences of three
lengths, whose counts fix a per-sequence, per-token and per-attending-pair cost
(:class:`CountedForward`): a transformer's forward is exactly such a sum.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

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


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# SDPA's CPU kernel, which FlopCounterMode (torch 2.14) does not count: counted as its CUDA kernels are.
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def counted_flops(run: Callable[[], object]) -> int:
    """The FLOPs torch's ``FlopCounterMode`` counts (matrix products and attention, 2 per multiply-add)
    while ``run()`` runs."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        run()
    return counter.get_total_flops()


# Sample sequence lengths (tokens, <cls> and <eos> included) a forward without a declared count is counted at.
SAMPLE_LENGTHS = (8, 16, 32)


@dataclass(frozen=True)
class CountedForward:
    """A forward's FLOPs as ``per_sequence x sequences + per_token x tokens + per_pair x attention_pairs``,
    fit exactly to counts on one sequence of each of three lengths (:meth:`fit`)."""

    per_sequence: float
    per_token: float
    per_pair: float

    def __call__(self, counts: BatchCounts) -> float:
        return (self.per_sequence * counts.sequences + self.per_token * counts.tokens
                + self.per_pair * counts.attention_pairs)

    @classmethod
    def fit(cls, flops_at: Callable[[int], float], lengths: tuple[int, int, int] = SAMPLE_LENGTHS) -> "CountedForward":
        """From ``flops_at(length)``, the FLOPs of one sequence of that many tokens: F(L) = s + t L + p L^2
        (the pairs of one sequence are L^2), solved through the divided differences of three lengths."""
        (a, fa), (b, fb), (c, fc) = ((length, Fraction(flops_at(length))) for length in lengths)  # exact
        per_pair = ((fc - fb) / (c - b) - (fb - fa) / (b - a)) / (c - a)
        per_token = (fb - fa) / (b - a) - per_pair * (a + b)
        return cls(float(fa - per_token * a - per_pair * a * a), float(per_token), float(per_pair))


@dataclass(frozen=True)
class CountedFlops:
    """What ``FlopCounterMode`` counted of an encoder that declares no count: each depth's forward, and its
    LM head per position (None: it has none)."""

    forward: dict[int, CountedForward]
    lm_head: float | None
    seconds: float  # what the counting took
