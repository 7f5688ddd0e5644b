"""A tiny encoder and hand-built batches for the objective tests (no ESM-2 needed)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from protjepa.alphabet import ESM_ALPHABET
from protjepa.batch import Batch
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.recipe import Recipe, parse_recipe


class ToyEncoder(Encoder):
    """Embedding, ``depth`` residual per-token blocks, final LayerNorm, a linear LM head.

    Records every forward call (was it the corrupted ``inputs`` or the clean ``tokens``,
    and ``stop_at``) so tests can count passes.
    """

    def __init__(self, dim: int = 8, depth: int = 4):
        super().__init__()
        self.alphabet = ESM_ALPHABET
        self.embed_dim, self.num_layers = dim, depth
        self.embed = nn.Embedding(len(ESM_ALPHABET), dim)
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, len(ESM_ALPHABET))
        self.calls: list[dict] = []

    def forward(self, tokens, padding_mask=None, *, layout=None, layers=(), stop_at=None) -> EncoderOutput:
        self.calls.append({"tokens": tokens, "stop_at": stop_at, "grad": torch.is_grad_enabled()})
        last_depth = self.num_layers if stop_at is None else stop_at
        x = self.embed(tokens)
        hidden = {0: x}
        for depth, block in enumerate(self.blocks[:last_depth], start=1):
            x = x + torch.tanh(block(x))
            hidden[depth] = x
        if last_depth == self.num_layers:
            x = hidden[self.num_layers] = self.final_norm(x)
        return EncoderOutput(x, {d: hidden[d] for d in layers})

    def lm_head(self, hidden: Tensor) -> Tensor:
        return self.head(hidden)


def make_batch(rows: list[str], selected: list[list[int]], length: int | None = None) -> Batch:
    """Sequences as ``<cls> residues <eos> <pad>...``; ``selected[b]`` lists residue numbers
    (0-based, within the sequence) chosen for prediction; those become <mask> in ``inputs``."""
    alphabet = ESM_ALPHABET
    length = length or max(len(r) for r in rows) + 2
    tokens = torch.full((len(rows), length), alphabet.pad_idx)
    for b, row in enumerate(rows):
        tokens[b, : len(row) + 2] = alphabet.encode(row)
    padding_mask = tokens == alphabet.pad_idx
    masked = torch.tensor([b * length + 1 + i for b, picks in enumerate(selected) for i in picks], dtype=torch.long)
    inputs = tokens.clone()
    inputs.view(-1)[masked] = alphabet.mask_idx
    residue = torch.tensor([b * length + 1 + i for b, row in enumerate(rows) for i in range(len(row))])
    sequence = torch.tensor([b for b, row in enumerate(rows) for _ in row])
    return Batch(
        tokens=tokens,
        inputs=inputs,
        padding_mask=padding_mask,
        masked_index=masked,
        residue_index=residue,
        residue_sequence=sequence,
        num_residues=len(residue),
        num_sequences=len(rows),
        num_padding=int(padding_mask.sum()),
        attention_pairs=sum((len(r) + 2) ** 2 for r in rows),
    )


def toy_batch() -> Batch:
    return make_batch(["MKTAYIAK", "GLSDGEWQ", "PEPTI"], [[1, 4], [0, 2, 7], [3]])


def recipe_of(*objectives: dict) -> Recipe:
    """A validated recipe with these objectives; tests pass the encoder to build_model themselves."""
    return parse_recipe({"name": "toy", "encoder": {"_component_": "toy_model.ToyEncoder"}, "objectives": list(objectives)})



class SmallTransformer(nn.Module):
    """``nn.TransformerEncoder`` behind the adapter protocol (a ``_component_`` encoder that declares no
    FLOP count): token embeddings, ``layers`` pre-norm blocks of ``heads`` heads and a 2x MLP."""

    def __init__(self, width: int = 32, layers: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(len(ESM_ALPHABET), width)
        block = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)

    def forward(self, tokens: Tensor, padding_mask: Tensor) -> Tensor:
        return self.blocks(self.embed(tokens), src_key_padding_mask=padding_mask)
