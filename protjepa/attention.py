"""Attention backends behind one switch: ``auto | xformers | sdpa | math``.

(Skeleton: the layout is fixed here; the backends are filled in with the ESM-2 encoder.)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from protjepa.batch import Batch


@dataclass
class AttentionLayout:
    """Which tokens may attend to which, for one batch; built once, shared by every layer."""

    padding_mask: Tensor | None  # [B, L] True at padding
    segment_ids: Tensor | None = None  # [B, L] packed rows: 1..k per sequence, 0 at padding
    positions: Tensor | None = None  # [B, L] rotary positions (None: 0..L-1 in every row)
    block_seqlens: tuple[int, ...] | None = None  # host-side block lengths for xformers
    cache: dict = field(default_factory=dict, repr=False)  # per-backend masks, built lazily

    @classmethod
    def from_batch(cls, batch: Batch) -> "AttentionLayout":
        return cls(batch.padding_mask, batch.segment_ids, batch.positions, batch.block_seqlens)

    @property
    def packed(self) -> bool:
        return self.segment_ids is not None
