"""Embeddings (pooling, windows, batching, the disk cache), masked-marginal variant scores, leakage,
and a probe that tells a random encoder from one that encodes local sequence context."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protjepa.alphabet import ESM_ALPHABET
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.encoders.esm2 import ESM2
from protjepa.evaluation.embed import Embedder, length_batches, weights_digest, windows
from protjepa.evaluation.leakage import Corpus
from protjepa.evaluation.suite import SuiteSettings, check_leakage, run_task
from protjepa.evaluation.task_data import TEST, TRAIN
from protjepa.evaluation.tasks import parse_spec, task_registry
from protjepa.evaluation.variant_effect import VariantError, consensus, masked_marginal_scores

VOCAB = len(ESM_ALPHABET)


class OneHotWindow(Encoder):
    """Residue i -> the one-hot letters of residues i-w..i+w. No training, yet it knows local
    context (window > 0); with window 0 its mean embedding is the amino-acid composition."""

    def __init__(self, window: int = 0):
        super().__init__()
        self.alphabet, self.num_layers, self.window = ESM_ALPHABET, 1, window
        self.embed_dim = VOCAB * (2 * window + 1)
        self.scale = nn.Parameter(torch.ones(()))  # a weight, so the checkpoint digest has something to hash
        self.calls = 0

    def forward(self, tokens, padding_mask=None, *, layout=None, layers=(), stop_at=None):
        self.calls += 1
        x = F.one_hot(tokens, VOCAB).float() * self.scale
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        padded = F.pad(x, (0, 0, self.window, self.window))
        hidden = torch.cat([padded[:, k:k + tokens.shape[1]] for k in range(2 * self.window + 1)], dim=-1)
        # Depth 0 (the embeddings) is half the last layer: a cache not keyed by layer would show.
        return EncoderOutput(hidden, {d: hidden if d == self.num_layers else hidden / 2 for d in layers})


class PositionalLM(Encoder):
    """Hidden = [one-hot token, position]; logits = one-hot @ W + position * u: log-odds known by hand."""

    def __init__(self):
        super().__init__()
        self.alphabet, self.num_layers, self.embed_dim = ESM_ALPHABET, 1, VOCAB + 1
        generator = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(VOCAB, VOCAB, generator=generator))
        self.u = nn.Parameter(torch.randn(VOCAB, generator=generator) * 0.1)

    def forward(self, tokens, padding_mask=None, *, layout=None, layers=(), stop_at=None):
        position = torch.arange(tokens.shape[1], dtype=torch.float32).expand(tokens.shape)
        hidden = torch.cat([F.one_hot(tokens, VOCAB).float(), position.unsqueeze(-1)], dim=-1)
        return EncoderOutput(hidden, {d: hidden for d in layers})

    def lm_head(self, hidden):
        return hidden[..., :VOCAB] @ self.w + hidden[..., VOCAB:] * self.u


def composition(sequence: str) -> np.ndarray:
    out = np.zeros(VOCAB)
    for letter in sequence:
        out[ESM_ALPHABET.index[letter]] += 1 / len(sequence)
    return out


def test_windows_and_length_batches_by_hand():
    owner, start, end = windows(np.array([5, 10, 3]), 4)
    assert owner.tolist() == [0, 0, 1, 1, 1, 2]
    assert list(zip(start.tolist(), end.tolist())) == [(0, 2), (2, 5), (0, 3), (3, 6), (6, 10), (0, 3)]
    # budget 24 tokens: 10 + 2 -> two rows of 12; then 3 + 2 -> four rows of 5
    assert [b.tolist() for b in length_batches(np.array([10, 3, 7, 1]), 24)] == [[0, 2], [1, 3]]


def test_pooled_is_the_mean_over_real_residues_and_duplicates_embed_once(tmp_path):
    encoder = OneHotWindow(0)
    sequences = ["MKV", "AAAAG", "MKV", "WY"]
    pooled = Embedder(encoder, cache_dir=None, progress=False, batch_tokens=8).pooled(sequences)
    np.testing.assert_allclose(pooled, np.stack([composition(s) for s in sequences]), atol=1e-6)
    per_residue = Embedder(encoder, cache_dir=None, progress=False).per_residue(sequences)
    assert [r.shape for r in per_residue] == [(3, VOCAB), (5, VOCAB), (3, VOCAB), (2, VOCAB)]
    assert per_residue[1].argmax(1).tolist() == [ESM_ALPHABET.index[c] for c in "AAAAG"]


def test_long_sequences_are_windowed_without_changing_a_context_free_embedding():
    encoder = OneHotWindow(0)
    sequences = ["MKVLAGHHW" * 3, "ACD"]
    whole = Embedder(encoder, cache_dir=None, progress=False)
    cut = Embedder(encoder, cache_dir=None, progress=False, max_length=4)
    np.testing.assert_allclose(cut.pooled(sequences), whole.pooled(sequences), atol=1e-6)
    for a, b in zip(cut.per_residue(sequences), whole.per_residue(sequences)):
        np.testing.assert_array_equal(a, b)


def test_padding_does_not_change_an_esm2_embedding():
    embedder = Embedder(ESM2(2, 32, 4), cache_dir=None, progress=False)
    alone = embedder.pooled(["MKVLAGHW"])
    beside_longer = embedder.pooled(["MKVLAGHW", "ACDEFGHIKLMNPQRSTVWY" * 3])[:1]
    np.testing.assert_allclose(alone, beside_longer, atol=1e-5)


def test_bf16_embeddings_are_close_to_fp32_and_cached_apart(tmp_path):
    encoder = ESM2(2, 32, 4)
    sequences = ["MKVLAGHW", "ACDEFGHIKLMNPQRSTVWY" * 3]
    fp32 = Embedder(encoder, cache_dir=tmp_path, progress=False)
    bf16 = Embedder(encoder, cache_dir=tmp_path, progress=False, bf16=True)
    a, b = fp32.pooled(sequences), bf16.pooled(sequences)
    assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 did run, and fp32 comes out
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999
    assert (fp32.cache_misses, bf16.cache_misses) == (1, 1) and len(list(tmp_path.rglob("*.npy"))) == 2
    assert fp32.seconds > 0 and bf16.seconds > 0
    fp32.pooled(sequences)  # a cache hit costs no embedding time
    assert fp32.cache_hits == 1


def test_second_embed_is_a_cache_hit_keyed_by_weights_layer_and_sequences(tmp_path):
    encoder = OneHotWindow(1)
    embedder = Embedder(encoder, cache_dir=tmp_path, progress=False)
    first = embedder.per_residue(["MKV", "GG"])
    calls = encoder.calls
    again = embedder.per_residue(["GG", "MKV"])  # same set, another order: one cache file
    assert (embedder.cache_hits, embedder.cache_misses, encoder.calls) == (1, 1, calls)
    np.testing.assert_array_equal(again[1], first[0])
    embedder.pooled(["MKV", "GG"])
    embedder.pooled(["MKV", "GG", "W"])
    assert embedder.cache_misses == 3
    at_depth_0 = Embedder(encoder, layer=0, cache_dir=tmp_path, progress=False)
    embeddings = at_depth_0.pooled(["MKV", "GG"])  # the set cached above at the last layer: its own file
    assert at_depth_0.cache_misses == 1
    np.testing.assert_allclose(embeddings, embedder.pooled(["MKV", "GG"]) / 2)
    before, unscaled = weights_digest(encoder), embedder.pooled(["GG"])
    with torch.no_grad():
        encoder.scale.mul_(2)
    assert weights_digest(encoder) != before
    rescaled = Embedder(encoder, cache_dir=tmp_path, progress=False)  # new weights: a new cache key
    np.testing.assert_allclose(rescaled.pooled(["GG"]), 2 * unscaled)
    assert rescaled.cache_misses == 1


def test_masked_marginal_log_odds_by_hand():
    encoder = PositionalLM()
    wt = "MKVLA"
    variants = ["MKVLA", "MRVLA", "MRVLG", "AKVLA"]
    mask, w, u = ESM_ALPHABET.mask_idx, encoder.w.detach(), encoder.u.detach()

    def log_odds(site: int, wt_letter: str, mutant: str) -> float:
        # at a masked site the hidden state is one-hot(<mask>) and the position (site + 1 after <cls>)
        a, b = ESM_ALPHABET.index[wt_letter], ESM_ALPHABET.index[mutant]
        return float(w[mask, b] - w[mask, a] + (site + 1) * (u[b] - u[a]))

    expected = [0.0, log_odds(1, "K", "R"), log_odds(1, "K", "R") + log_odds(4, "A", "G"), log_odds(0, "M", "A")]
    np.testing.assert_allclose(masked_marginal_scores(encoder, wt, variants, batch_size=2), expected, atol=1e-4)
    with pytest.raises(VariantError, match="no LM head"):
        masked_marginal_scores(OneHotWindow(0), wt, variants)
    assert consensus(["MKV", "MRV", "AKV", "MKL"]) == "MKV"


def test_leakage_counts_and_drops_only_scored_sequences(tmp_path, monkeypatch):
    corpus_file = tmp_path / "corpus.fasta"
    corpus_file.write_text(">c1\nMKVLAG\n>c2\nWWWW\n")
    (tmp_path / "d.csv").write_text("seq,y\nMKVLAG,1\nWWWW,2\nMKVLAG,3\nAAAA,4\n")
    spec = parse_spec({"name": "t", "description": "d", "type": "regression", "metric": "spearman",
                       "fields": {"sequence": "seq", "label": "y"}, "train": "d.csv", "test": "d.csv"})
    from protjepa.evaluation.task_data import load_task

    data = load_task(spec, tmp_path)  # records 0-3 train, 4-7 test (the same file twice)
    report = check_leakage(data, Corpus([corpus_file]), SuiteSettings(drop_leaked=True))
    assert report == {"exact": {"train": 3, "test": 3}}
    assert data.part.tolist() == [TRAIN] * 4 + [-1, -1, -1, TEST]
    assert data.notes[-1] == "dropped exact matches in the pretraining corpus: 3 test"

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mmseqs: skipped, said
    data = load_task(spec, tmp_path)
    check_leakage(data, Corpus([corpus_file]), SuiteSettings(drop_identity=0.9))
    assert data.notes[-1] == "mmseqs is not on PATH: the identity filter was skipped"

    # A stand-in mmseqs that reports query 0 (the first scored sequence) at 95% and query 2 at 50%.
    fake = tmp_path / "bin" / "mmseqs"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0\\tc1\\t0.95\\n2\\tc2\\t0.50\\n' > \"$4\"\n")  # $4: the hits file
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    data = load_task(spec, tmp_path)
    report = check_leakage(data, Corpus([corpus_file]), SuiteSettings(drop_identity=0.9))
    assert report["similar"] == {"train": 0, "test": 1}
    assert data.part.tolist() == [TRAIN] * 4 + [-1, TEST, TEST, TEST]


def test_a_random_encoder_probes_clearly_worse_than_one_that_knows_local_context(data_root):
    """Secondary structure and disorder need context around a residue; a random ESM-2 barely has it."""
    settings = SuiteSettings(max_train=100, max_test=60)
    registry = task_registry()
    torch.manual_seed(0)
    scores = {}
    for name in ("ss3_cb513", "disorder_netsurfp"):
        for label, encoder in (("random", ESM2(2, 64, 4)), ("context", OneHotWindow(3))):
            embedder = Embedder(encoder, cache_dir=None, progress=False)
            scores[name, label] = run_task(registry.get(name), data_root, embedder, settings)[0]["value"]
    assert scores["ss3_cb513", "context"] > scores["ss3_cb513", "random"] + 0.05, scores
    assert scores["disorder_netsurfp", "context"] > scores["disorder_netsurfp", "random"] + 0.1, scores
    assert 0.4 < scores["ss3_cb513", "random"] < 0.6  # near the majority-class rate: the probe is no oracle
