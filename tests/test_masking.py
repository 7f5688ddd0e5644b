"""Masking: exact per-sequence counts, 80/10/10, special tokens untouched, span lengths."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from protjepa.alphabet import ESM_ALPHABET as A
from protjepa.data.masking import mask_tokens, residue_mask, selection_counts
from protjepa.recipe import MaskingConfig


def padded(lengths: list[int], seed: int = 0) -> torch.Tensor:
    """Random standard residues wrapped in <cls> ... <eos>, padded with <pad>."""
    g = torch.Generator().manual_seed(seed)
    standard = A.standard_ids
    rows = [torch.cat([torch.tensor([A.cls_idx]), standard[torch.randint(20, (n,), generator=g)],
                       torch.tensor([A.eos_idx])]) for n in lengths]
    return pad_sequence(rows, batch_first=True, padding_value=A.pad_idx)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_lengths(selected: torch.Tensor) -> float:
    """Mean length of runs of consecutive selected positions."""
    s = selected.int()
    starts = s[:, 0].sum() + (s[:, 1:] > s[:, :-1]).sum()
    return s.sum().item() / starts.item()


def test_selection_counts_by_hand():
    tokens = padded([10, 5, 1, 3, 100, 7])
    counts = selection_counts(residue_mask(tokens, A), 0.15)
    # 1.5 -> 2, 0.75 -> 1, 0.15 -> at least 1, 0.45 -> 0 -> 1, 15, 1.05 -> 1
    assert counts.tolist() == [2, 1, 1, 1, 15, 1]
    # Half to even, as Python's round: 2.5 -> 2, 3.5 -> 4.
    assert selection_counts(residue_mask(padded([5, 7]), A), 0.5).tolist() == [2, 4]


@pytest.mark.parametrize("strategy", ["random", "span"])
@pytest.mark.parametrize("rate", [0.15, 0.2, 0.5])
def test_exact_count_per_sequence_and_never_specials(strategy, rate):
    lengths = [1, 2, 7, 30, 64, 200, 511, 37] * 8
    tokens = padded(lengths)
    config = MaskingConfig(rate=rate, strategy=strategy, mean_span=3)
    inputs, selected = mask_tokens(tokens, config, A, gen())
    expected = torch.tensor([max(1, round(rate * n)) for n in lengths])  # ties (3.5, 4.5) half to even
    assert selected.sum(1).tolist() == expected.tolist()
    specials = ~residue_mask(tokens, A)
    assert not (selected & specials).any()
    assert torch.equal(inputs[~selected], tokens[~selected])  # <cls>, <eos>, <pad> and unselected intact


def test_80_10_10_proportions():
    tokens = padded([500] * 1000)
    inputs, selected = mask_tokens(tokens, MaskingConfig(rate=0.2), A, gen(1))
    original, corrupted = tokens[selected], inputs[selected]
    n = len(original)
    assert n == 1000 * 100
    masked = (corrupted == A.mask_idx).float().mean().item()
    swapped = ((corrupted != A.mask_idx) & (corrupted != original)).float().mean().item()
    kept = (corrupted == original).float().mean().item()
    # A random standard amino acid equals the original 1 time in 20. Bounds: > 7 sd of a binomial at n = 1e5.
    assert abs(masked - 0.8) < 0.01
    assert abs(swapped - 0.1 * 19 / 20) < 0.007
    assert abs(kept - (0.1 + 0.1 / 20)) < 0.007
    assert torch.isin(corrupted[corrupted != A.mask_idx], A.standard_ids).all()


def test_probabilities_at_the_edges():
    tokens = padded([50] * 20)
    inputs, selected = mask_tokens(tokens, MaskingConfig(mask_prob=1.0, random_prob=0.0), A, gen())
    assert (inputs[selected] == A.mask_idx).all()
    inputs, selected = mask_tokens(tokens, MaskingConfig(mask_prob=0.0, random_prob=0.0), A, gen())
    assert torch.equal(inputs, tokens) and selected.any()


def test_reproducible_by_generator():
    tokens = padded([120, 80, 33])
    config = MaskingConfig(strategy="span")
    first, second, other = (mask_tokens(tokens, config, A, gen(s)) for s in (7, 7, 8))
    assert torch.equal(first.inputs, second.inputs) and torch.equal(first.selected, second.selected)
    assert not torch.equal(first.selected, other.selected)


@pytest.mark.parametrize("mean_span", [3.0, 8.0])
def test_span_runs_have_about_the_asked_mean(mean_span):
    tokens = padded([400] * 256)
    config = MaskingConfig(rate=0.15, strategy="span", mean_span=mean_span)
    _, selected = mask_tokens(tokens, config, A, gen(2))
    # Neighbouring spans merge and the last span taken is cut: "about" means within 25%.
    assert abs(run_lengths(selected) - mean_span) < 0.25 * mean_span
    _, scattered = mask_tokens(tokens, MaskingConfig(rate=0.15), A, gen(2))
    assert run_lengths(scattered) < 1.3  # random selection: mostly isolated positions


def test_span_of_one_is_random_selection_in_distribution():
    tokens = padded([400] * 64)
    _, selected = mask_tokens(tokens, MaskingConfig(rate=0.15, strategy="span", mean_span=1), A, gen(3))
    assert run_lengths(selected) < 1.3
    # Selected positions spread over the whole sequence, not bunched at its start.
    position = torch.arange(tokens.shape[1]).expand_as(tokens)
    assert abs(position[selected].float().mean().item() - 200.5) < 10
