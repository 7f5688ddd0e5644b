"""The encoder protocol every objective composes onto.

Token ids and a padding mask in, per-residue hidden states out; optionally the hidden
states of intermediate layers (depth 0 = embeddings, depth k = after block k, depth
``num_layers`` = the final, normalised output) and an LM head. Native encoders
subclass :class:`Encoder`; any other ``nn.Module`` is wrapped by
:class:`protjepa.encoders.adapter.ModuleAdapter`.
"""
from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from protjepa.alphabet import Alphabet
from protjepa.errors import UserError
from protjepa.flops import SAMPLE_LENGTHS, BatchCounts, CountedFlops, CountedForward, counted_flops


class LayerError(UserError, ValueError):
    """A layer the encoder does not have."""


# Residues of the sample sequences an encoder without a declared FLOP count is counted on.
SAMPLE_RESIDUES = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRV"


class EncoderOutput(NamedTuple):
    last: Tensor  # [B, L, D]: final output, or the hidden state at ``stop_at``
    layers: dict[int, Tensor]  # requested depths -> [B, L, D]


class Encoder(nn.Module):
    """Base class of the native encoders.

    Subclasses set ``embed_dim``, ``num_layers`` and ``alphabet`` and implement
    ``forward``. ``layout`` is a :class:`protjepa.attention.AttentionLayout`
    (packed rows, positions, the chosen attention backend); ``layers`` lists the
    depths to return; ``stop_at`` ends the forward after that depth (targets taken
    at half depth need not run the upper half).
    """

    embed_dim: int
    num_layers: int
    alphabet: Alphabet
    # What FlopCounterMode counted of an encoder that declares no count (count_flops); None: not counted.
    counted: CountedFlops | None = None

    def forward(
        self,
        tokens: Tensor,
        padding_mask: Tensor | None = None,
        *,
        layout=None,
        layers: Sequence[int] = (),
        stop_at: int | None = None,
    ) -> EncoderOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def lm_head(self, hidden: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} has no LM head")

    def forward_flops(self, counts: BatchCounts, depth: int) -> float | None:
        """Matmul FLOPs of one forward to ``depth`` over a batch of ``counts`` (see :mod:`protjepa.flops`).
        Declare them where you can; by default, what :meth:`count_flops` counted, and None before."""
        fit = self.counted.forward.get(depth) if self.counted is not None else None
        return None if fit is None else fit(counts)

    def lm_head_flops(self, positions: int) -> float | None:
        """Matmul FLOPs of one LM head forward at ``positions`` rows; by default, what :meth:`count_flops`
        counted, and None before."""
        per_position = self.counted.lm_head if self.counted is not None else None
        return None if per_position is None else per_position * positions

    @torch.no_grad()
    def count_flops(self, depths: set[int]) -> CountedFlops:
        """Count with torch's FlopCounterMode what this encoder's forward to each of ``depths`` and its LM head
        cost (:mod:`protjepa.flops`), on sample sequences on its device. In training mode, as training runs it
        (in eval mode without gradients ``nn.TransformerEncoder`` takes a fused kernel the counter does not
        see); the random state and the buffers (batch-norm statistics) are left as they were."""
        started = time.perf_counter()
        device, dtype = self.device, next(self.parameters()).dtype
        was_training = self.training
        buffers = {name: buffer.clone() for name, buffer in self.named_buffers()}
        self.train()

        def forward_at(depth: int, length: int) -> int:
            tokens = self.alphabet.encode(SAMPLE_RESIDUES[:length - 2]).unsqueeze(0).to(device)
            return counted_flops(lambda: self(tokens, tokens.eq(self.alphabet.pad_idx), stop_at=depth))

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # sequences of 8 to 32 tokens: one thread waits on no other (2 cores, busy)
        try:
            # Dropout draws nothing from the run's random stream.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                forward = {depth: CountedForward.fit(lambda length, depth=depth: forward_at(depth, length))
                           for depth in sorted(depths)}
                rows = SAMPLE_LENGTHS[0]
                hidden = torch.zeros(rows, self.embed_dim, device=device, dtype=dtype)
                lm_head = counted_flops(lambda: self.lm_head(hidden)) / rows if self.has_lm_head else None
        finally:
            torch.set_num_threads(threads)
            self.train(was_training)
            for name, buffer in self.named_buffers():
                buffer.copy_(buffers[name])
        return CountedFlops(forward, lm_head, time.perf_counter() - started)

    def attention_request(self) -> tuple[str, int] | None:
        """(the attention backend asked for, the head width) of an encoder that attends through
        :func:`protjepa.attention.attend`; None for one that attends its own way."""
        return None

    @property
    def has_lm_head(self) -> bool:
        return type(self).lm_head is not Encoder.lm_head

    def plan_depths(self, layers: Sequence[int], stop_at: int | None) -> tuple[int, set[int]]:
        """(the depth the forward runs to, the depths to return), checked against the encoder."""
        end = self.num_layers if stop_at is None else stop_at
        wanted = set(layers)
        if not 0 <= end <= self.num_layers or any(not 0 <= d <= end for d in wanted):
            raise ValueError(f"layers {sorted(wanted)} and stop_at {stop_at} must lie in 0..{self.num_layers}, "
                             "layers at most stop_at")
        return end, wanted

    def resolve_layer(self, layer: int | str) -> int:
        """``last`` -> num_layers, ``half`` -> num_layers // 2, ints as given (negatives from the top)."""
        if layer == "last":
            return self.num_layers
        if layer == "half":
            return max(1, self.num_layers // 2)
        if isinstance(layer, int):
            depth = layer if layer >= 0 else self.num_layers + 1 + layer
            if 0 <= depth <= self.num_layers:
                return depth
        raise LayerError(f"layer {layer!r} is not 'last', 'half' or a depth in 0..{self.num_layers} "
                         f"(-1..-{self.num_layers + 1} from the top)")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
