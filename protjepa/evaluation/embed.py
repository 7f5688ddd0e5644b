"""Frozen-encoder embeddings: mean over real residues, or every residue, of one layer.

Sequences are embedded once each (duplicates share a row), sorted by length into batches
under a token budget, in inference mode, optionally under bf16 autocast (fp32 out); the
encoder stops at the requested layer and never runs its LM head. Sequences longer than
``max_length`` residues are cut into near-equal windows embedded separately; a sequence's
mean is over all its residues.

Results are cached on disk under ``<cache>/<weights digest>/``, one file per (layer, kind,
window length, set of sequences): a second request for the same sequences (by any task:
the GB1 splits share one) is a cache hit; bf16 embeddings are cached apart. Per-residue
embeddings are stored as float16.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from protjepa.attention import AttentionLayout
from protjepa.batch import Batch, gather_positions, mean_pool
from protjepa.data.fasta import residue_pattern
from protjepa.devices import resolve_device
from protjepa.encoders.base import Encoder
from protjepa.errors import ArgumentError, whole_number
from protjepa.precision import bf16_autocast

DEFAULT_CACHE = Path(os.environ.get("PROTJEPA_CACHE", "~/.cache/protjepa")).expanduser() / "embeddings"
# Tokens a batch, padding included, when none is given. On a CPU small batches keep the
# activations in cache: 2,048 embedded 1.4-1.6x faster than 16,384 (docs/benchmarks.md).
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the class name and every tensor of the state dict (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def windows(lengths: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sequence index, start, end) of near-equal windows of at most ``max_length`` residues."""
    counts = -(-lengths // max_length)
    owner = np.repeat(np.arange(len(lengths)), counts)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)  # window number within its sequence
    n, total = counts[owner], lengths[owner]
    return owner, k * total // n, (k + 1) * total // n


def length_batches(lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Indices grouped longest first, each group padded to its longest within ``batch_tokens``."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        rows = max(1, batch_tokens // int(lengths[order[start]] + 2))
        batches.append(order[start:start + rows])
        start += rows
    return batches


def inference_batch(tokens: list[torch.Tensor], pad_idx: int) -> Batch:
    """Unmasked rows ``<cls> ... <eos>``, padded: the residues are every position but the first and last."""
    lengths = torch.tensor([len(t) - 2 for t in tokens])
    padded = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=pad_idx)
    position = torch.arange(padded.shape[1])
    residue = (position >= 1) & (position <= lengths.unsqueeze(1))
    return Batch(
        tokens=padded,
        inputs=padded,
        padding_mask=padded.eq(pad_idx),
        masked_index=torch.zeros(0, dtype=torch.long),
        residue_index=residue.flatten().nonzero().squeeze(1),
        residue_sequence=torch.repeat_interleave(torch.arange(len(tokens)), lengths),
        num_residues=int(lengths.sum()),
        num_sequences=len(tokens),
        attention_pairs=sum(len(t) ** 2 for t in tokens),
    )


class Embedder:
    """Embeds sequences with a frozen encoder at one layer (``last``, ``half`` or a depth).

    The encoder is put in eval mode and its weights digest (the cache key) is taken once:
    an encoder that changes afterwards needs a new Embedder. ``bf16`` runs the encoder under
    bf16 autocast (on a CPU, worth it where bf16 is native: see :mod:`protjepa.precision`).
    """

    def __init__(
        self,
        encoder: Encoder,
        layer: int | str = "last",
        *,
        device: str | torch.device | None = None,
        batch_tokens: int | None = None,
        max_length: int = 1022,
        cache_dir: str | Path | None = DEFAULT_CACHE,
        progress: bool = True,
        bf16: bool = False,
    ):
        self.device = resolve_device(device)
        if batch_tokens is None:
            batch_tokens = DEFAULT_BATCH_TOKENS.get(self.device.type, DEFAULT_BATCH_TOKENS["cuda"])
        whole_number(max_length, "max_length")
        whole_number(batch_tokens, "batch_tokens")
        self.depth = encoder.resolve_layer(layer)
        self.encoder = encoder.eval().to(self.device)
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self.bf16 = bf16
        self.weights = weights_digest(encoder)
        self.cache_hits = 0
        self.cache_misses = 0
        self.seconds = 0.0  # spent embedding (cache misses), so that a probe run can report it apart

    def pooled(self, sequences: Sequence[str], desc: str = "") -> np.ndarray:
        """[N, D] float32 mean embeddings, in the order given."""
        unique, inverse = np.unique(np.asarray(self._checked(sequences), dtype=object), return_inverse=True)
        return self._cached(list(unique), "mean", desc)[inverse]

    def per_residue(self, sequences: Sequence[str], desc: str = "") -> list[np.ndarray]:
        """One [L_i, D] array per sequence (float16 views of the cached array)."""
        unique, inverse = np.unique(np.asarray(self._checked(sequences), dtype=object), return_inverse=True)
        flat = self._cached(list(unique), "residues", desc)
        offsets = np.cumsum([0] + [len(s) for s in unique])
        return [flat[offsets[i]:offsets[i + 1]] for i in inverse]

    def _checked(self, sequences: Sequence[str]) -> list[str]:
        """``sequences`` as a list of non-empty strings of the encoder's residue letters (an empty
        one has no mean: NaN); else an error naming the first that is not."""
        sequences = list(sequences)
        not_a_residue = residue_pattern(self.encoder.alphabet)
        for i, sequence in enumerate(sequences):
            if not isinstance(sequence, str):
                raise ArgumentError(f"sequences[{i}]: expected a string of residue letters, "
                                    f"got {type(sequence).__name__}")
            if not sequence:
                raise ArgumentError(f"sequences[{i}]: an empty sequence, nothing to embed")
            bad = not_a_residue.search(sequence.upper())
            if bad is not None:
                raise ArgumentError(f"sequences[{i}]: unknown residue letter {bad.group()!r} at position "
                                    f"{bad.start() + 1}")
        return sequences

    def _cached(self, unique: list[str], kind: str, desc: str) -> np.ndarray:
        if self.cache_dir is None:
            return self._embed(unique, kind, desc)
        content = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:24]
        name = f"layer{self.depth}-{kind}-w{self.max_length}{'-bf16' if self.bf16 else ''}-{content}.npy"
        path = self.cache_dir / self.weights[:24] / name
        if path.exists():
            self.cache_hits += 1
            return np.load(path, mmap_mode="r" if kind == "residues" else None)
        self.cache_misses += 1
        out = self._embed(unique, kind, desc)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as handle:  # written aside, then renamed: concurrent runs never read half a file
            np.save(handle, out)
        partial.replace(path)
        return out

    @torch.inference_mode()
    def _embed(self, sequences: list[str], kind: str, desc: str) -> np.ndarray:
        began = time.perf_counter()
        alphabet = self.encoder.alphabet
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        owner, start, end = windows(lengths, self.max_length)
        dim = self.encoder.embed_dim
        if kind == "mean":
            out = torch.zeros(len(sequences), dim, dtype=torch.float64)
        else:
            out = torch.zeros(int(lengths.sum()), dim, dtype=torch.float16)
            first = np.cumsum(lengths) - lengths  # row of each sequence's first residue in ``out``
        # disable=None: a bar on a terminal only, none in logs
        bar = tqdm(total=int(lengths.sum()), unit="res", desc=desc or "embed", leave=False,
                   disable=None if self.progress else True)
        for rows in length_batches(end - start, self.batch_tokens):
            tokens = [alphabet.encode(sequences[owner[w]][start[w]:end[w]]) for w in rows]
            batch = inference_batch(tokens, alphabet.pad_idx).to(self.device)
            with bf16_autocast(self.device, self.bf16):
                hidden = self.encoder(
                    batch.inputs, batch.padding_mask, layout=AttentionLayout.from_batch(batch),
                    layers=(self.depth,), stop_at=self.depth,
                ).layers[self.depth].float()
            sizes = torch.as_tensor(end[rows] - start[rows])
            if kind == "mean":
                sums = mean_pool(hidden, batch).cpu().double() * sizes.unsqueeze(1)
                out.index_add_(0, torch.as_tensor(owner[rows]), sums)
            else:
                residues = gather_positions(hidden, batch.residue_index).cpu().half()
                rows_at = torch.as_tensor(first[owner[rows]] + start[rows])
                out[torch.repeat_interleave(rows_at, sizes) + _ramp(sizes)] = residues
            bar.update(int(sizes.sum()))
        bar.close()
        if kind == "mean":
            out = (out / torch.as_tensor(lengths).unsqueeze(1)).float()
        self.seconds += time.perf_counter() - began
        return out.numpy()


def _ramp(sizes: torch.Tensor) -> torch.Tensor:
    """0..n_0-1, 0..n_1-1, ...: each residue's offset within its window."""
    return torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
