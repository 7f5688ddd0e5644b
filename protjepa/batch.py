"""The batch every objective and encoder sees.

Everything that depends on the batch's *shape* (which positions are masked, where
sequences begin and end in a packed row) is computed by the collator on the host,
so the training step never has to ask the device (no ``nonzero``, no ``.item()``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

PAD_MULTIPLE = 8  # padded rows are a whole number of 8-token blocks


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def masked_budget(tokens: int, rate: float) -> int:
    """Entries of ``masked_index`` in a batch of static shapes (``data.static_shapes``): ``rate`` of its
    ``tokens``, rounded up to :data:`PAD_MULTIPLE`. The <cls>/<eos> of every sequence and any padding
    hold no selection, so a batch rarely selects more; when it does (selection counts round per
    sequence, at least 1), the collator leaves the excess unselected, at random."""
    return round_up(math.ceil(rate * tokens), PAD_MULTIPLE)


def row_tokens(crop: int, packing: bool) -> int:
    """Tokens of the widest row a batch needs for one cropped sequence: ``<cls>``, ``crop`` residues,
    ``<eos>``, and padded to :data:`PAD_MULTIPLE` unless rows are packed."""
    return crop + 2 if packing else round_up(crop + 2, PAD_MULTIPLE)


@dataclass
class Batch:
    tokens: Tensor  # [B, L] original token ids: MLM labels and the input of the target pass
    inputs: Tensor  # [B, L] corrupted ids (80/10/10) fed to the student
    padding_mask: Tensor  # [B, L] bool, True at padding
    masked_index: Tensor  # [N] flat indices into B*L of the positions selected for prediction
    residue_index: Tensor  # [T] flat indices into B*L of real residues (no <cls>/<eos>/<pad>)
    residue_sequence: Tensor  # [T] which sequence (0..S-1, row-major) each of those residues is in
    segment_ids: Tensor | None = None  # [B, L] packed rows: 1..k per sequence, 0 at padding
    positions: Tensor | None = None  # [B, L] rotary positions restarting at each packed sequence
    # [N] float32 under static shapes: 1 at a selected position, 0 at the entries that fill
    # masked_index up to its fixed length (they point at position 0, a <cls>). None: all selected.
    masked_weight: Tensor | None = None
    # Lengths of the attention blocks covering the B*L flattened tokens in row-major order
    # (each sequence, and each row's padding tail, is one block): what xformers'
    # BlockDiagonalMask wants, kept on the host.
    block_seqlens: tuple[int, ...] | None = None
    num_residues: int = 0  # host-side count of real residues, for token budgets (no sync)
    num_sequences: int = 0
    num_padding: int = 0  # host-side count of padding tokens (the collator's waste)
    attention_pairs: int = 0  # host-side sum over sequences of length^2 (<cls>/<eos> included): for FLOP counts
    masked_filler: int = 0  # host-side count of masked_index's filler entries (weight 0, at its end)
    static_shapes: bool = False  # every batch of its corpus has these shapes (no block_seqlens then)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)

    @property
    def num_masked(self) -> int:
        """Host-side count of the selected positions (the filler of static shapes left out)."""
        return self.masked_index.numel() - self.masked_filler

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tokens.shape)  # type: ignore[return-value]

    def __len__(self) -> int:  # Composer counts samples with len()
        return self.num_sequences or self.tokens.shape[0]


def gather_positions(x: Tensor, flat_index: Tensor) -> Tensor:
    """``x[B, L, ...]`` -> ``x.flatten(0, 1)[flat_index]`` without a host sync."""
    return x.flatten(0, 1).index_select(0, flat_index)


def row_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """The mean over dim 0 of ``values`` [N, ...]; with a ``weight`` [N] (a batch's ``masked_weight``:
    1 at real rows, 0 at filler) the mean over the real rows."""
    if weight is None:
        return values.mean(0)
    weight = weight.to(values.dtype)
    return (values * weight.view(-1, *[1] * (values.dim() - 1))).sum(0) / weight.sum().clamp_min(1)


def row_std(values: Tensor, weight: Tensor | None) -> Tensor:
    """The std (no correction) over dim 0 of ``values`` [N, D], over the real rows when ``weight`` is given."""
    if weight is None:
        return values.std(0, correction=0)
    return row_mean((values - row_mean(values, weight)).square(), weight).sqrt()


def mean_pool(hidden: Tensor, batch: Batch) -> Tensor:
    """Mean over each sequence's real residues: [B, L, D] -> [S, D] (S sequences, packed rows too)."""
    residues = gather_positions(hidden, batch.residue_index)
    sums = residues.new_zeros(batch.num_sequences, residues.shape[-1]).index_add_(0, batch.residue_sequence, residues)
    ones = residues.new_ones(residues.shape[0])
    counts = residues.new_zeros(batch.num_sequences).index_add_(0, batch.residue_sequence, ones)  # no bincount: it syncs
    return sums / counts.clamp_min(1).unsqueeze(-1)
