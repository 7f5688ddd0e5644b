"""The streaming pretraining corpus: FASTA in, ready ``Batch``es out, under a token budget.

Per epoch: read records one at a time, keep the split (a held-out fraction chosen by a
stable hash of the record id) and this process's shard (DDP rank x DataLoader worker),
shuffle through a bounded buffer, randomly crop residues to ``crop``, add <cls>/<eos>,
group into batches of at most ``batch_tokens`` padded tokens (rows x row length, and at
most ``max_sequences``), collate and mask. Training corpora repeat forever, reseeding
the shuffle, crops and masking with each epoch. Use ``DataLoader(corpus, batch_size=None)``.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Iterable, Iterator, Literal

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from protjepa.alphabet import ESM_ALPHABET, Alphabet
from protjepa.batch import PAD_MULTIPLE, Batch, round_up, row_tokens
from protjepa.data.collate import Collator, first_fit_decreasing
from protjepa.data.fasta import FastaReader, UnknownLetters
from protjepa.errors import UserError
from protjepa.files import MAX_RESIDUES
from protjepa.paths import data_root, resolve
from protjepa.recipe import DataConfig, MaskingConfig

Split = Literal["all", "train", "holdout"]


class CorpusError(UserError, ValueError):
    """A corpus that cannot be built from the recipe's ``data`` section."""


def holdout_score(record_id: str) -> float:
    """A stable uniform number in [0, 1) per record id (blake2b, same on every machine and run)."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_split(record_id: str, split: Split, holdout_fraction: float) -> bool:
    """``holdout``: ids scoring below the fraction; ``train``: the rest; ``all``: every id."""
    if split == "all":
        return True
    return (holdout_score(record_id) < holdout_fraction) == (split == "holdout")


def shuffled(items: Iterable, buffer_size: int, rng: random.Random) -> Iterator:
    """Shuffle a stream through a buffer of ``buffer_size`` items (1: no shuffling)."""
    buffer: list = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        j = rng.randrange(buffer_size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def random_crop(sequence: str, crop: int, rng: random.Random) -> str:
    if len(sequence) <= crop:
        return sequence
    start = rng.randrange(len(sequence) - crop + 1)
    return sequence[start:start + crop]


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest(), "big") >> 1


class FastaCorpus(IterableDataset):
    """Batches of one FASTA file's records (see the module docstring); ``len()`` is undefined."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        masking: MaskingConfig | None = None,
        crop: int = 512,
        batch_tokens: int = 8192,
        max_sequences: int | None = None,
        packing: bool = False,
        static_shapes: bool = False,
        split: Split = "all",
        holdout_fraction: float = 0.0,
        shuffle_buffer: int = 4096,
        infinite: bool = True,
        seed: int = 0,
        unknown_letters: UnknownLetters = "error",
        alphabet: Alphabet = ESM_ALPHABET,
        max_residues: int = MAX_RESIDUES,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.row_length = crop + 2  # residues + <cls> + <eos>
        widest = row_tokens(crop, packing)
        if batch_tokens < widest:
            raise CorpusError(f"data.batch_tokens: {batch_tokens} is less than one row of {widest} tokens "
                              f"(data.crop {crop} + <cls>/<eos>{'' if packing else ', padded to a multiple of 8'})")
        if split != "all" and not 0 < holdout_fraction < 1:
            raise CorpusError(f"data.holdout_fraction: a {split!r} split needs a fraction in (0, 1), "
                              f"got {holdout_fraction}")
        self.path = path
        self.masking = masking
        self.crop = crop
        self.batch_tokens = batch_tokens
        self.max_sequences = max_sequences
        if static_shapes and not packing:
            raise CorpusError("data.static_shapes needs data.packing: true (padded rows are as long as each "
                              "batch's longest sequence)")
        self.packing = packing
        self.static_shapes = static_shapes
        self.split = split
        self.holdout_fraction = holdout_fraction
        self.shuffle_buffer = shuffle_buffer
        self.infinite = infinite
        self.seed = seed
        self.unknown_letters = unknown_letters
        self.alphabet = alphabet
        self.max_residues = max_residues
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at ``epoch`` (e.g. when resuming)."""
        self.epoch = epoch

    def shard(self) -> tuple[int, int]:
        """(this process's shard, number of shards) over DDP ranks x DataLoader workers."""
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world = torch.distributed.get_world_size() if distributed else 1
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        return rank * workers + worker_id, world * workers

    def __iter__(self) -> Iterator[Batch]:
        shard, shards = self.shard()
        epoch = self.epoch
        while True:
            yield from self._epoch(epoch, shard, shards)
            if not self.infinite:
                return
            epoch += 1

    def _sequences(self, shard: int, shards: int) -> Iterator[str]:
        return split_sequences(self.path, self.split, self.holdout_fraction, self.unknown_letters, self.alphabet,
                               shard=shard, shards=shards, max_residues=self.max_residues)

    def _epoch(self, epoch: int, shard: int, shards: int) -> Iterator[Batch]:
        rng = random.Random(_seed(self.seed, epoch, shard))
        collate = Collator(self.alphabet, self.masking, self.packing, self.row_length,
                           seed=_seed(self.seed, epoch, shard, "mask"),
                           static_rows=self.batch_tokens // self.row_length if self.static_shapes else None)
        tokens = (
            self.alphabet.encode(random_crop(sequence, self.crop, rng))
            for sequence in shuffled(self._sequences(shard, shards), self.shuffle_buffer, rng)
        )
        groups = self._packed_groups(tokens) if self.packing else self._padded_groups(tokens)
        for group in groups:
            yield collate(group)

    def _padded_groups(self, tokens: Iterable[Tensor]) -> Iterator[list[Tensor]]:
        """Rows as long as the longest (rounded up to 8), as many rows as the budget holds."""
        group: list[Tensor] = []
        longest = 0
        for t in tokens:
            width = round_up(max(longest, len(t)), PAD_MULTIPLE)
            if group and ((len(group) + 1) * width > self.batch_tokens or len(group) == self.max_sequences):
                yield group
                group, longest = [], 0
            group.append(t)
            longest = max(longest, len(t))
        if group:
            yield group

    def _packed_groups(self, tokens: Iterable[Tensor]) -> Iterator[list[Tensor]]:
        """Gather at least as many tokens as the rows hold, pack what fits (first-fit
        decreasing), carry the rest over to the next batch."""
        max_rows = self.batch_tokens // self.row_length
        capacity = max_rows * self.row_length
        pending: list[Tensor] = []
        pending_tokens = 0
        for t in tokens:
            pending.append(t)
            pending_tokens += len(t)
            while pending_tokens >= capacity or len(pending) == self.max_sequences:
                group, pending = self._pack(pending, max_rows)
                pending_tokens -= sum(len(g) for g in group)
                yield group
        while pending:
            group, pending = self._pack(pending, max_rows)
            yield group

    def _pack(self, pending: list[Tensor], max_rows: int) -> tuple[list[Tensor], list[Tensor]]:
        """(the sequences that fit in ``max_rows`` rows, the rest); the longest always fits."""
        rows = first_fit_decreasing([len(t) for t in pending], self.row_length, max_rows).row
        return [t for t, r in zip(pending, rows) if r >= 0], [t for t, r in zip(pending, rows) if r < 0]


def split_sequences(path: str | os.PathLike, split: Split = "all", holdout_fraction: float = 0.0,
                    unknown_letters: UnknownLetters = "error", alphabet: Alphabet = ESM_ALPHABET, *,
                    shard: int = 0, shards: int = 1, max_residues: int = MAX_RESIDUES) -> Iterator[str]:
    """Residue strings of one split of a FASTA file (every ``shards``-th, from ``shard``), in file order."""
    kept = 0
    for record in FastaReader(path, unknown_letters, alphabet, max_residues):
        if not in_split(record.id, split, holdout_fraction):
            continue
        if kept % shards == shard:
            yield record.sequence
        kept += 1


def data_files(data: DataConfig, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The recipe's data files by role (``train``; ``valid`` when given), resolved against the data
    root: ``root`` (e.g. ``--data-root``) wins over ``data.root``."""
    base = data_root(root or data.root)
    files = {"train": resolve(base, data.train)}
    if data.valid is not None:
        files["valid"] = resolve(base, data.valid)
    return files


def make_corpus(data: DataConfig, masking: MaskingConfig | None, split: Literal["train", "valid"], *,
                seed: int = 0, root: str | None = None, alphabet: Alphabet = ESM_ALPHABET) -> FastaCorpus | None:
    """The recipe's training corpus (infinite, shuffled) or validation corpus (one pass, file
    order; ``None`` when there is neither ``data.valid`` nor a ``data.holdout_fraction``).
    ``root`` (e.g. ``--data-root``) wins over ``data.root``."""
    files = data_files(data, root)
    holdout = data.valid is None and data.holdout_fraction > 0
    common = dict(masking=masking, crop=data.crop, batch_tokens=data.batch_tokens, max_sequences=data.max_sequences,
                  packing=data.packing, unknown_letters=data.unknown_letters, alphabet=alphabet, seed=seed,
                  holdout_fraction=data.holdout_fraction, max_residues=data.max_residues)
    if split == "train":  # static shapes for the training step only: evaluation runs eagerly
        return FastaCorpus(files["train"], split="train" if holdout else "all", static_shapes=data.static_shapes,
                           shuffle_buffer=data.shuffle_buffer, infinite=True, **common)
    if data.valid is not None:
        return FastaCorpus(files["valid"], split="all", shuffle_buffer=1, infinite=False, **common)
    if holdout:
        return FastaCorpus(files["train"], split="holdout", shuffle_buffer=1, infinite=False, **common)
    return None


def fixed_batches(path: str | os.PathLike, n: int, *, chunk: int | None = None, crop: int = 512,
                  masking: MaskingConfig | None = None, seed: int = 0, split: Split = "all",
                  holdout_fraction: float = 0.0, unknown_letters: UnknownLetters = "error",
                  alphabet: Alphabet = ESM_ALPHABET, max_residues: int = MAX_RESIDUES) -> list[Batch]:
    """The first ``n`` records of the split as padded batches of ``chunk`` records (default: one
    batch of all ``n``), cropped (and masked) the same way every call."""
    rng = random.Random(seed)
    sequences = []
    for sequence in split_sequences(path, split, holdout_fraction, unknown_letters, alphabet,
                                    max_residues=max_residues):
        sequences.append(alphabet.encode(random_crop(sequence, crop, rng)))
        if len(sequences) == n:
            collate, chunk = Collator(alphabet, masking, seed=seed), chunk or n
            return [collate(sequences[i:i + chunk]) for i in range(0, n, chunk)]
    raise CorpusError(f"{path}: only {len(sequences)} records in split {split!r}, {n} are needed")


def held_out_batches(data: DataConfig, masking: MaskingConfig | None, n: int, *, chunk: int | None = None,
                     seed: int = 0, root: str | None = None) -> tuple[list[Batch], str]:
    """The first ``n`` held-out records of the recipe's data (``valid``, else the holdout split of
    ``train``, else the first records of ``train``) as :func:`fixed_batches`, and where they came from."""
    source = make_corpus(data, masking, "valid", seed=seed, root=root)
    if source is None:  # no held-out split: the first training records
        source = make_corpus(data, masking, "train", seed=seed, root=root)
        where = f"the first {n} records of {data.train} (no held-out split)"
    else:
        where = f"{n} held-out records"
    batches = fixed_batches(source.path, n, chunk=chunk, crop=data.crop, masking=masking, seed=seed,
                            split=source.split, holdout_fraction=data.holdout_fraction,
                            unknown_letters=data.unknown_letters, max_residues=data.max_residues)
    return batches, where
