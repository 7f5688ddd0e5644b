"""Embedding throughput: the probe suite's :class:`Embedder` against transformers' ``EsmModel``
on the same sequences and weights, in fp32 and under bf16 autocast.

Each row embeds the whole sample once per repetition (mean-pooled, last layer, no cache), so
the rows go through :func:`protjepa.bench.timing.measure` like the step rows, with one
"batch" that is the whole sample. transformers' model runs as its users run it for
embeddings: ``inference_mode``, length-sorted batches of ``EMBED_PEER_ROWS`` sequences.
"""
from __future__ import annotations

import tempfile
from itertools import islice

import numpy as np
import torch

from protjepa.bench.batches import Prepared
from protjepa.bench.config import BenchConfig, recipe_for
from protjepa.bench.rows import Row
from protjepa.build import build_encoder
from protjepa.data.fasta import FastaReader
from protjepa.encoders.weights import export_hf
from protjepa.encoders.esm2 import ESM2
from protjepa.evaluation.embed import Embedder
from protjepa.paths import data_root, resolve
from protjepa.precision import bf16_autocast, cpu_bf16_missing

EMBED_PEER_ROWS = 8
WINDOW = 1022  # the Embedder's default max_length


def sample_sequences(config: BenchConfig) -> list[str]:
    """The first ``config.embed_sequences`` held-out Swiss-Prot sequences that fit the probe's
    window (so that both sides embed each sequence whole)."""
    data = recipe_for(config, "mlm").data
    reader = FastaReader(resolve(data_root(config.data_root), data.valid), unknown_letters=data.unknown_letters)
    return list(islice((r.sequence for r in reader if len(r.sequence) <= WINDOW), config.embed_sequences))


def peer_encoder(encoder: ESM2, device: torch.device):
    """transformers' ``EsmModel`` (no pooler, no LM head) holding ``encoder``'s weights."""
    from transformers import EsmModel
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # its load report lists the LM head we export and it drops: expected
    try:
        with tempfile.TemporaryDirectory() as directory:
            export_hf(encoder, directory)
            model = EsmModel.from_pretrained(directory, add_pooling_layer=False)
    finally:
        logging.set_verbosity(verbosity)
    return model.to(device).eval()


@torch.inference_mode()
def peer_pooled(model, encoder: ESM2, sequences: list[str], bf16: bool) -> np.ndarray:
    """Mean over residues of the last hidden state, length-sorted batches of EMBED_PEER_ROWS."""
    alphabet, device = encoder.alphabet, model.device
    out = np.zeros((len(sequences), encoder.embed_dim), dtype=np.float32)
    order = np.argsort([-len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), EMBED_PEER_ROWS):
        rows = order[start:start + EMBED_PEER_ROWS]
        ids = torch.nn.utils.rnn.pad_sequence([alphabet.encode(sequences[i]) for i in rows], batch_first=True,
                                              padding_value=alphabet.pad_idx).to(device)
        real = ids.ne(alphabet.pad_idx)
        with bf16_autocast(device, bf16):
            hidden = model(input_ids=ids, attention_mask=real.long()).last_hidden_state.float()
        residues = real & ids.ne(alphabet.cls_idx) & ids.ne(alphabet.eos_idx)
        pooled = (hidden * residues[..., None]).sum(1) / residues.sum(1, keepdim=True)
        out[rows] = pooled.cpu().numpy()
    return out


def embedding_rows(config: BenchConfig, device: torch.device) -> tuple[list[Row], dict[str, list[Prepared]], dict]:
    """Rows ``embed`` / ``embed_peer`` (and ``+bf16`` where bf16 is native), the one "batch" they
    read, and a check that both sides embed alike (fp32, the same weights)."""
    torch.manual_seed(config.seed)
    encoder = build_encoder(recipe_for(config, "mlm")).to(device).eval()
    sequences = sample_sequences(config)
    peer = peer_encoder(encoder, device)
    ours = {bf16: Embedder(encoder, "last", device=device, cache_dir=None, progress=False, bf16=bf16)
            for bf16 in (False, True)}
    residues = sum(len(s) for s in sequences)
    whole = [Prepared(batch=None, tokens=residues, counts=None, peer_inputs={})]
    precisions = [False] + ([True] if device.type == "cuda" or cpu_bf16_missing() is None else [])
    rows = []
    for bf16 in precisions:
        tag = "+bf16" if bf16 else ""
        rows.append(Row(f"embed{tag}", f"our Embedder, {len(sequences)} Swiss-Prot sequences, mean-pooled"
                        + (", bf16 autocast" if bf16 else ""), "sequences",
                        lambda p, e=ours[bf16]: e.pooled(sequences)))
        rows.append(Row(f"embed_peer{tag}", f"transformers EsmModel, inference_mode, length-sorted batches of "
                        f"{EMBED_PEER_ROWS}" + (", bf16 autocast" if bf16 else ""), "sequences",
                        lambda p, bf16=bf16: peer_pooled(peer, encoder, sequences, bf16)))
    error = float(np.abs(ours[False].pooled(sequences) - peer_pooled(peer, encoder, sequences, False)).max())
    check = dict(name="embeddings match transformers'", passed=error < 1e-3,
                 detail=f"max |difference| of fp32 pooled embeddings {error:.2g} (the same weights)")
    return rows, {"sequences": whole}, check


