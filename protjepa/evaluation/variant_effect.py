"""Zero-shot variant effects: masked-marginal log-odds (Meier et al. 2021).

For each position where some variant differs from the wild type, the wild type is run with
that one position masked; a variant scores the sum over its substituted positions of
``log p(mutant residue) - log p(wild-type residue)``. One forward pass per mutated site,
however many variants, then one gather for all of them.
"""
from __future__ import annotations

import numpy as np
import torch

from protjepa.encoders.base import Encoder
from protjepa.errors import UserError


class VariantError(UserError, ValueError):
    """Variants that cannot be scored against the wild type."""


def consensus(sequences: list[str]) -> str:
    """The most common letter at each position of equal-length sequences (ties: the lowest byte)."""
    letters = _letters(sequences, "consensus")
    counts = np.zeros((letters.shape[1], 256), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(letters.shape[1]), letters.shape), letters), 1)
    return counts.argmax(1).astype(np.uint8).tobytes().decode()


def _letters(sequences: list[str], what: str) -> np.ndarray:
    lengths = {len(s) for s in sequences}
    if len(lengths) != 1:
        raise VariantError(f"{what}: variants must all have the wild type's length (got {sorted(lengths)[:5]})")
    return np.frombuffer("".join(sequences).encode(), dtype=np.uint8).reshape(len(sequences), -1)


@torch.no_grad()
def masked_marginal_scores(encoder: Encoder, wild_type: str, variants: list[str], batch_size: int = 8) -> np.ndarray:
    """One score per variant: summed log-odds of its substitutions under the masked wild type."""
    if not encoder.has_lm_head:
        raise VariantError(f"{type(encoder).__name__} has no LM head: masked-marginal scores need one")
    alphabet = encoder.alphabet
    letters = _letters([wild_type] + list(variants), "variant_effect")
    ids = alphabet.letter_table()[torch.from_numpy(letters.astype(np.int64))]  # [1 + V, L]
    if (ids < 0).any():
        raise VariantError("variant_effect: a letter outside the alphabet")
    wt, var = ids[0], ids[1:]
    sites = (var != wt).any(0).nonzero().squeeze(1)  # host-side: the positions some variant changes
    wt_row = torch.cat([wt.new_tensor([alphabet.cls_idx]), wt, wt.new_tensor([alphabet.eos_idx])])
    log_odds = torch.zeros(len(wt), len(alphabet))  # [L, vocab]: 0 at untouched positions
    device = encoder.device
    for chunk in sites.split(batch_size):
        rows = wt_row.repeat(len(chunk), 1)
        rows[torch.arange(len(chunk)), chunk + 1] = alphabet.mask_idx
        rows = rows.to(device)
        hidden = encoder(rows, rows.eq(alphabet.pad_idx)).last
        logp = torch.log_softmax(encoder.lm_head(hidden).float(), dim=-1)
        at_site = logp[torch.arange(len(chunk), device=device), chunk.to(device) + 1].cpu()  # [S, vocab]
        log_odds[chunk] = at_site - at_site.gather(1, wt[chunk].unsqueeze(1))
    return log_odds.gather(1, var.T).sum(0).numpy()
