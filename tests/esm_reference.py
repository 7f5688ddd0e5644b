"""References for the ESM-2 tests: a small random Hugging Face ESM-2, and real sequences
from the shared data folder as a padded batch with some <mask> tokens."""
from __future__ import annotations

import gzip
from pathlib import Path

import torch

from protjepa.alphabet import ESM_ALPHABET

QUERY_FASTA = "uniprot_random20k/mmseqs2_example_QUERY.fasta.gz"


def tiny_hf_esm(layers: int = 3, dim: int = 64, heads: int = 4, *, token_dropout: bool = True, seed: int = 0):
    """A random ``EsmForMaskedLM`` with ESM-2's settings; every parameter perturbed, so that a
    LayerNorm or a bias loaded into the wrong place cannot hide behind its 1/0 initialisation."""
    from transformers import EsmConfig, EsmForMaskedLM

    torch.manual_seed(seed)
    config = EsmConfig(
        vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=dim, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=4 * dim, position_embedding_type="rotary",
        token_dropout=token_dropout, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, emb_layer_norm_before=False,
    )
    model = EsmForMaskedLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def real_sequences(data_root: Path, lengths: tuple[int, ...]) -> list[str]:
    """The first len(lengths) query sequences, cropped to the given residue counts."""
    sequences: list[str] = []
    current: list[str] = []
    with gzip.open(data_root / QUERY_FASTA, "rt") as handle:
        for line in handle:
            if not line.startswith(">"):
                current.append(line.strip())
            elif current:
                sequences.append("".join(current))
                current = []
                if len(sequences) == len(lengths):
                    break
    return [s[:n] for s, n in zip(sequences, lengths)]


def padded_tokens(sequences: list[str], mask_every: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] token ids (<cls> ... <eos>, then <pad>) and the padding mask; every
    ``mask_every``-th residue (offset by the row index) replaced by <mask>."""
    encoded = [ESM_ALPHABET.encode(s) for s in sequences]
    tokens = torch.full((len(encoded), max(map(len, encoded))), ESM_ALPHABET.pad_idx)
    for row, ids in enumerate(encoded):
        if mask_every:
            ids = ids.clone()
            ids[1 + row : len(ids) - 1 : mask_every] = ESM_ALPHABET.mask_idx
        tokens[row, : len(ids)] = ids
    return tokens, tokens.eq(ESM_ALPHABET.pad_idx)
