"""Any ``nn.Module`` as an :class:`~protjepa.encoders.base.Encoder`.

A recipe names a factory with torchtune's ``_component_`` convention; its other keys are
the factory's keyword arguments::

    encoder:
      _component_: my_lab.models.make_encoder
      width: 256

The adapter protocol. The module is called as ``module(tokens, padding_mask)``:
``tokens`` is ``[B, L]`` long (ids in ``module.alphabet``, by default ESM's 33 tokens,
each sequence wrapped as ``<cls> ... <eos>``) and ``padding_mask`` is ``[B, L]`` bool,
True at padding. It returns one of

* a tensor ``[B, L, D]``: the final hidden states (depth ``num_layers``);
* a sequence (tuple or list) of tensors ``[B, L, D]``, one per depth: 0 (embeddings),
  1..num_layers-1 (after each block), num_layers (the final output);
* a mapping with ``hidden_states`` (such a sequence) and/or ``last_hidden_state`` (the
  final output; it wins over ``hidden_states[-1]``), as Hugging Face models return
  with ``output_hidden_states=True``;
* an :class:`~protjepa.encoders.base.EncoderOutput`, whose ``layers`` maps depths to
  hidden states.

Objectives that ask for an intermediate depth (a JEPA target at ``half``) need the
module to return it; otherwise the step fails with an error naming the depth.

Optional attributes of the module:

* ``embed_dim``: else read from the output of a probe call made when wrapping;
* ``num_layers``: else the deepest depth the module returns (``len(hidden_states) - 1``),
  or 1 when it returns only the final output;
* ``alphabet``: a :class:`protjepa.alphabet.Alphabet` (default: ESM's);
* ``lm_head``: a callable ``[..., D] -> [..., len(alphabet)]`` logits; when the module has
  none, the adapter adds a trainable linear head so ``mlm`` works.

Packed rows (``data.packing: true``): the module must take keyword arguments
``segment_ids`` (``[B, L]``, 1..k per sequence, 0 at padding) and ``positions``
(``[B, L]``, restarting at 0 for each sequence) and keep sequences from attending to
each other; modules without them are refused for packed batches.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Sequence

import torch
from torch import Tensor, nn

from protjepa.alphabet import ESM_ALPHABET, Alphabet
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.errors import UserError

PROBE_SEQUENCE = "MKTAYIAKQR"


class AdapterError(UserError, TypeError):
    """A module that does not follow the adapter protocol; the message names the module."""


def _split_output(output, name: str) -> tuple[Tensor, dict[int, Tensor]]:
    """A module's return value -> (final hidden states, {depth: hidden states})."""
    if isinstance(output, Tensor):
        return output, {}
    if isinstance(output, EncoderOutput):
        return output.last, dict(output.layers)
    if isinstance(output, Mapping):
        per_depth = dict(enumerate(output.get("hidden_states") or ()))
        last = output.get("last_hidden_state")
        if last is None and per_depth:
            last = per_depth[len(per_depth) - 1]
        if last is not None:
            return last, per_depth
    elif isinstance(output, (tuple, list)) and output and all(isinstance(t, Tensor) for t in output):
        return output[-1], dict(enumerate(output))
    raise AdapterError(
        f"{name}.forward returned {type(output).__name__}; expected a [B, L, D] tensor, a sequence of them per "
        "depth, a mapping with hidden_states/last_hidden_state, or an EncoderOutput (see protjepa.encoders.adapter)"
    )


class ModuleAdapter(Encoder):
    """A foreign module behind the :class:`Encoder` interface; build it with :meth:`wrap`."""

    def __init__(self, module: nn.Module, *, embed_dim: int, num_layers: int, alphabet: Alphabet, name: str):
        super().__init__()
        self.module = module
        self.embed_dim = embed_dim
        self.num_layers = num_layers
        self.alphabet = alphabet
        self.name = name
        params = inspect.signature(module.forward).parameters
        self.accepts_segments = "segment_ids" in params and "positions" in params
        self.head = None if callable(getattr(module, "lm_head", None)) else nn.Linear(embed_dim, len(alphabet))

    @classmethod
    def wrap(cls, module: nn.Module) -> Encoder:
        """Check ``module`` against the protocol with one small probe call and wrap it
        (a native :class:`Encoder` is returned as it is)."""
        if isinstance(module, Encoder):
            return module
        if not isinstance(module, nn.Module):
            raise AdapterError(f"the encoder factory returned a {type(module).__name__}, not a torch nn.Module")
        name = f"{type(module).__module__}.{type(module).__qualname__}"
        alphabet = getattr(module, "alphabet", ESM_ALPHABET)
        last, per_depth = cls._probe(module, alphabet, name)
        if last.dim() != 3 or last.shape[:2] != (1, len(PROBE_SEQUENCE) + 2):
            raise AdapterError(f"{name}.forward returned hidden states of shape {tuple(last.shape)}; expected [B, L, D]")
        embed_dim = getattr(module, "embed_dim", last.shape[-1])
        if embed_dim != last.shape[-1]:
            raise AdapterError(f"{name}.embed_dim is {embed_dim}, but its hidden states have width {last.shape[-1]}")
        num_layers = getattr(module, "num_layers", max(max(per_depth, default=0), 1))
        deeper = [d for d in per_depth if d > num_layers]
        if deeper:
            raise AdapterError(f"{name}.num_layers is {num_layers}, but it returns hidden states at depth {deeper[0]}")
        adapter = cls(module, embed_dim=embed_dim, num_layers=num_layers, alphabet=alphabet, name=name)
        with torch.no_grad():
            logits = adapter.lm_head(last)
        if logits.shape[-1] != len(alphabet):
            raise AdapterError(f"{name}.lm_head returns {logits.shape[-1]} logits; its alphabet has {len(alphabet)}")
        return adapter

    @staticmethod
    def _probe(module: nn.Module, alphabet: Alphabet, name: str) -> tuple[Tensor, dict[int, Tensor]]:
        device = next(module.parameters(), torch.empty(0)).device
        tokens = alphabet.encode(PROBE_SEQUENCE).unsqueeze(0).to(device)
        was_training = module.training
        module.eval()  # no batch-norm statistics or dropout from the probe
        try:
            with torch.no_grad():
                return _split_output(module(tokens, torch.zeros_like(tokens, dtype=torch.bool)), name)
        finally:
            module.train(was_training)

    def forward(
        self,
        tokens: Tensor,
        padding_mask: Tensor | None = None,
        *,
        layout=None,
        layers: Sequence[int] = (),
        stop_at: int | None = None,
    ) -> EncoderOutput:
        if padding_mask is None:
            padding_mask = tokens.eq(self.alphabet.pad_idx)
        packing_args = {}
        if layout is not None and layout.packed:
            if not self.accepts_segments:
                raise AdapterError(
                    f"{self.name} cannot encode packed rows (its forward takes no segment_ids/positions): "
                    "set data.packing: false"
                )
            packing_args = dict(segment_ids=layout.segment_ids, positions=layout.positions)
        last, per_depth = _split_output(self.module(tokens, padding_mask, **packing_args), self.name)
        per_depth[self.num_layers] = last
        end = self.num_layers if stop_at is None else stop_at
        missing = sorted({end, *layers} - per_depth.keys())
        if missing:
            raise AdapterError(
                f"{self.name}: layer {missing[0]} was requested, but the module returns depths "
                f"{sorted(per_depth)} only (return hidden states per depth: see protjepa.encoders.adapter)"
            )
        return EncoderOutput(per_depth[end], {d: per_depth[d] for d in layers})

    def lm_head(self, hidden: Tensor) -> Tensor:
        return self.head(hidden) if self.head is not None else self.module.lm_head(hidden)
