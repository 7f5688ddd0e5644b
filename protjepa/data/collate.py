"""Token tensors -> a ready :class:`~protjepa.batch.Batch`, padded or packed, masked or not.

Each sequence arrives as ``<cls> residues <eos>``. Padded mode puts one sequence per row,
rows as long as the longest rounded up to a multiple of 8. Packed mode places whole
sequences into rows of ``row_length`` by first-fit decreasing, with ``segment_ids``
(1..k per row, 0 at padding) and ``positions`` restarting at 0 for each sequence.
Masking runs on the per-sequence matrix first, so its rate is exact per sequence in both
modes; every index the training step needs is computed here, on the host. Static shapes
(packed, ``static_rows``) fix the row count and the length of ``masked_index`` per batch.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from protjepa.alphabet import ESM_ALPHABET, Alphabet
from protjepa.batch import PAD_MULTIPLE, Batch, masked_budget, round_up
from protjepa.data.fasta import UnknownLetters, clean_letters, residue_pattern
from protjepa.data.masking import mask_tokens, residue_mask
from protjepa.recipe import MaskingConfig


class Packing(NamedTuple):
    row: list[int]  # row of each sequence (input order); -1 where it did not fit
    offset: list[int]  # column of its first token in that row
    slot: list[int]  # 0..k-1: its place among the sequences of its row, left to right
    rows: int  # rows used


def first_fit_decreasing(lengths: Sequence[int], row_length: int, max_rows: int | None = None) -> Packing:
    """Longest first, each into the first row with room; a new row while ``max_rows`` allows.

    A loop over host ints (one per sequence), not over tensors. Sequences that fit nowhere get
    row -1; packing only the placed ones again reproduces the same placement.
    """
    row, offset, slot = [-1] * len(lengths), [0] * len(lengths), [0] * len(lengths)
    fill: list[int] = []  # tokens used per row
    count: list[int] = []  # sequences per row
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        r = next((r for r, used in enumerate(fill) if used + n <= row_length), None)
        if r is None:
            if n > row_length or (max_rows is not None and len(fill) >= max_rows):
                continue
            r = len(fill)
            fill.append(0)
            count.append(0)
        row[i], offset[i], slot[i] = r, fill[r], count[r]
        fill[r] += n
        count[r] += 1
    return Packing(row, offset, slot, len(fill))


class Collator:
    """``Collator(...)(sequences) -> Batch``; ``masking=None`` leaves inputs = tokens, nothing selected.

    ``row_length`` is the longest sequence allowed (tokens, <cls>/<eos> included) and, when
    packing, the length of every row. ``seed`` seeds the masking generator, which advances
    with every batch. ``static_rows`` (packing only) gives every batch the same shapes: that
    many rows (empty ones fill it) and a ``masked_index`` of :func:`~protjepa.batch.masked_budget`
    entries, filler weighted 0 (``masked_weight``); what CUDA graphs need.
    """

    def __init__(self, alphabet: Alphabet = ESM_ALPHABET, masking: MaskingConfig | None = None,
                 packing: bool = False, row_length: int | None = None, seed: int = 0,
                 static_rows: int | None = None):
        if packing and row_length is None:
            raise ValueError("packing needs a row_length")
        if static_rows is not None and not packing:
            raise ValueError("static rows need packing: padded rows are as long as each batch's longest")
        self.alphabet = alphabet
        self.masking = masking
        self.packing = packing
        self.row_length = row_length
        self.static_rows = static_rows
        self.masked_budget = (masked_budget(static_rows * row_length, masking.rate)
                              if static_rows is not None and masking is not None else None)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, sequences: Sequence[Tensor]) -> Batch:
        if not sequences:
            raise ValueError("cannot collate an empty list of sequences")
        lengths = [len(s) for s in sequences]
        if self.row_length is not None and max(lengths) > self.row_length:
            raise ValueError(f"a sequence of {max(lengths)} tokens exceeds row_length {self.row_length}")
        pad = self.alphabet.pad_idx
        per_sequence = pad_sequence(list(sequences), batch_first=True, padding_value=pad)  # [S, Lmax]
        if self.masking is not None:
            inputs, selected = mask_tokens(per_sequence, self.masking, self.alphabet, self.generator)
        else:
            inputs, selected = per_sequence, torch.zeros_like(per_sequence, dtype=torch.bool)
        if self.masked_budget is not None:
            inputs, selected = self._within_budget(per_sequence, inputs, selected)
        residues = residue_mask(per_sequence, self.alphabet)

        static = self.static_rows is not None
        if self.packing:
            placement = first_fit_decreasing(lengths, self.row_length)
            rows, length = placement.rows, self.row_length
            if static:
                if rows > self.static_rows:
                    raise ValueError(f"the sequences need {rows} rows of {length} tokens; "
                                     f"static rows: {self.static_rows}")
                rows = self.static_rows
            row, offset, slot = map(torch.tensor, (placement.row, placement.offset, placement.slot))
        else:
            rows, length = len(sequences), round_up(max(lengths), PAD_MULTIPLE)
            row, offset, slot = torch.arange(rows), torch.zeros(rows, dtype=torch.long), None

        # Scatter every real token of the [S, Lmax] matrix to its flat place in [rows * length].
        column = torch.arange(per_sequence.shape[1])
        real = column < torch.tensor(lengths).unsqueeze(1)
        start = row * length + offset
        destination = (start.unsqueeze(1) + column)[real]
        # Sequences numbered in row-major order of their first token (= input order when padded).
        number = torch.empty_like(start).scatter_(0, start.argsort(), torch.arange(len(start)))

        def place(values: Tensor, fill) -> Tensor:
            flat = torch.full((rows * length,), fill, dtype=values.dtype)
            flat[destination] = values.expand_as(per_sequence)[real]
            return flat

        sequence_of = place(number.unsqueeze(1), -1)
        residue_index = place(residues, False).nonzero().squeeze(1)
        masked_index = place(selected, False).nonzero().squeeze(1)
        masked_weight, filler = None, 0
        if self.masked_budget is not None:
            # Filler entries point at position 0 (row 0's <cls>, never selected) with weight 0.
            filler = self.masked_budget - len(masked_index)
            masked_weight = torch.cat([torch.ones(len(masked_index)), torch.zeros(filler)])
            masked_index = torch.cat([masked_index, masked_index.new_zeros(filler)])
        return Batch(
            tokens=place(per_sequence, pad).view(rows, length),
            inputs=place(inputs, pad).view(rows, length),
            padding_mask=(sequence_of < 0).view(rows, length),
            masked_index=masked_index,
            masked_weight=masked_weight,
            residue_index=residue_index,
            residue_sequence=sequence_of[residue_index],
            segment_ids=None if slot is None else place(slot.unsqueeze(1) + 1, 0).view(rows, length),
            positions=None if slot is None else place(column, 0).view(rows, length),
            # Static shapes carry nothing per batch on the host that the step would read.
            block_seqlens=None if static else _block_seqlens(row.tolist(), offset.tolist(), lengths, rows, length),
            num_residues=len(residue_index),
            num_sequences=len(sequences),
            num_padding=rows * length - sum(lengths),
            attention_pairs=sum(n * n for n in lengths),
            masked_filler=filler,
            static_shapes=static,
        )

    def _within_budget(self, tokens: Tensor, inputs: Tensor, selected: Tensor) -> tuple[Tensor, Tensor]:
        """At most ``masked_budget`` selected positions: an excess (rare, see ``masked_budget``) is left
        unselected at random, its inputs restored."""
        excess = int(selected.sum()) - self.masked_budget
        if excess <= 0:
            return inputs, selected
        scores = torch.rand(selected.shape, generator=self.generator).masked_fill_(~selected, 2.0)
        dropped = torch.zeros(selected.numel(), dtype=torch.bool)
        dropped[scores.flatten().topk(excess, largest=False).indices] = True
        dropped = dropped.view_as(selected)
        return torch.where(dropped, tokens, inputs), selected & ~dropped


def _block_seqlens(row: list[int], offset: list[int], lengths: list[int], rows: int, length: int) -> tuple[int, ...]:
    """Each sequence, then each row's padding tail, as blocks covering all rows * length tokens."""
    per_row: list[list[tuple[int, int]]] = [[] for _ in range(rows)]
    for r, o, n in zip(row, offset, lengths):
        per_row[r].append((o, n))
    blocks: list[int] = []
    for placed in per_row:
        blocks += [n for _, n in sorted(placed)]
        tail = length - sum(n for _, n in placed)
        if tail:
            blocks.append(tail)
    return tuple(blocks)


def encode_sequences(sequences: Sequence[str], alphabet: Alphabet = ESM_ALPHABET, *,
                     unknown_letters: UnknownLetters = "error", crop: int | None = None) -> list[Tensor]:
    """Residue strings -> ``<cls> residues <eos>`` id tensors (the first ``crop`` residues when given)."""
    pattern = residue_pattern(alphabet)
    out = []
    for i, sequence in enumerate(sequences):
        cleaned, _ = clean_letters(sequence, unknown_letters, f"sequence {i}", pattern)
        if not cleaned:
            raise ValueError(f"sequence {i} is empty")
        out.append(alphabet.encode(cleaned[:crop] if crop else cleaned))
    return out


def batch_of_sequences(sequences: Sequence[str], alphabet: Alphabet = ESM_ALPHABET, *,
                       unknown_letters: UnknownLetters = "error", crop: int | None = None) -> Batch:
    """A padded, unmasked batch (``masked_index`` empty) in input order, for evaluation and embedding."""
    return Collator(alphabet)(encode_sequences(sequences, alphabet, unknown_letters=unknown_letters, crop=crop))
