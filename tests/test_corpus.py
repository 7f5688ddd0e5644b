"""Collating (padded and packed), the streaming corpus, splits, budgets, and the data root."""
from __future__ import annotations

import itertools
import time

import pytest
import torch
from torch.utils.data import DataLoader

from protjepa.alphabet import ESM_ALPHABET as A
from protjepa.batch import mean_pool
from protjepa.data import (
    Collator,
    CorpusError,
    FastaCorpus,
    FastaError,
    FastaReader,
    batch_of_sequences,
    first_fit_decreasing,
    fixed_batches,
    holdout_score,
    in_split,
    make_corpus,
    split_sequences,
    write_fasta,
)
from protjepa.errors import UserError
from protjepa import paths
from protjepa.paths import DataPathError, resolve
from protjepa.recipe import DataConfig, MaskingConfig

TRAIN = "pretrain_swissprot50/swissprot2014_50_train.fasta.gz"
VALID = "pretrain_swissprot50/swissprot2014_50_valid.fasta.gz"
LETTERS = "ACDEFGHIKLMNPQRSTVWY"


def residues(n: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    return "".join(LETTERS[i] for i in torch.randint(20, (n,), generator=g).tolist())


def small_fasta(tmp_path, lengths, name="small.fasta"):
    return write_fasta(tmp_path / name, [(f"seq{i}", residues(n, i)) for i, n in enumerate(lengths)])


def padding_fraction(batch) -> float:
    """Share of the B*L tokens that are padding."""
    return batch.num_padding / batch.tokens.numel()


def check_consistent(batch, lengths_in_order):
    """Invariants every collated batch keeps; ``lengths_in_order``: residues per sequence, row-major."""
    rows, length = batch.shape
    flat = batch.tokens.flatten()
    assert sum(batch.block_seqlens) == rows * length
    assert not torch.isin(flat[batch.residue_index], torch.tensor(A.special_ids)).any()
    assert batch.num_residues == len(batch.residue_index) == sum(lengths_in_order)
    assert torch.bincount(batch.residue_sequence, minlength=batch.num_sequences).tolist() == lengths_in_order
    assert torch.equal(batch.residue_sequence, batch.residue_sequence.sort().values)  # row-major numbering
    assert batch.num_padding == int(batch.padding_mask.sum()) == int((flat == A.pad_idx).sum())
    assert torch.isin(batch.masked_index, batch.residue_index).all()
    unselected = torch.ones(rows * length, dtype=torch.bool)
    unselected[batch.masked_index] = False
    assert torch.equal(batch.inputs.flatten()[unselected], flat[unselected])
    # Blocks: every sequence starts with <cls> and ends with <eos>; the rest are padding tails.
    start = 0
    for n in batch.block_seqlens:
        block = flat[start:start + n]
        assert (block == A.pad_idx).all() or (block[0] == A.cls_idx and block[-1] == A.eos_idx)
        assert start // length == (start + n - 1) // length  # blocks never straddle rows
        start += n


# --------------------------------------------------------------------------- collator


def test_padded_batch_by_hand():
    batch = Collator(A)([A.encode("MKLVA"), A.encode("GGS")])
    assert batch.shape == (2, 8)  # longest 7 tokens, rounded up to 8
    assert batch.tokens[1].tolist() == [A.cls_idx, 6, 6, 8, A.eos_idx, A.pad_idx, A.pad_idx, A.pad_idx]
    assert batch.residue_index.tolist() == [1, 2, 3, 4, 5, 9, 10, 11]
    assert batch.residue_sequence.tolist() == [0] * 5 + [1] * 3
    assert batch.block_seqlens == (7, 1, 5, 3)
    assert (batch.num_residues, batch.num_sequences, batch.num_padding) == (8, 2, 4)
    assert padding_fraction(batch) == 0.25
    assert batch.masked_index.numel() == 0 and torch.equal(batch.inputs, batch.tokens)
    assert batch.segment_ids is None and batch.positions is None


def test_packed_batch_by_hand():
    # 7, 5, 4 and 8 tokens into rows of 12, longest first: 8 -> row 0; 7 -> row 1; 5 -> row 1 (12);
    # 4 -> row 0 (12). Row-major numbering: seq 3, seq 2, seq 0, seq 1.
    sequences = [A.encode("A" * 5), A.encode("C" * 3), A.encode("D" * 2), A.encode("E" * 6)]
    batch = Collator(A, packing=True, row_length=12)(sequences)
    assert batch.shape == (2, 12)
    assert batch.tokens[0].tolist() == [0] + [9] * 6 + [2] + [0, 13, 13, 2]
    assert batch.segment_ids.tolist() == [[1] * 8 + [2] * 4, [1] * 7 + [2] * 5]
    assert batch.positions.tolist() == [list(range(8)) + list(range(4)), list(range(7)) + list(range(5))]
    assert batch.block_seqlens == (8, 4, 7, 5)
    assert batch.residue_sequence.tolist() == [0] * 6 + [1] * 2 + [2] * 5 + [3] * 3
    assert batch.num_padding == 0 and not batch.padding_mask.any()
    # mean_pool follows the same row-major numbering.
    hidden = batch.tokens.unsqueeze(-1).float()
    assert mean_pool(hidden, batch).squeeze(-1).tolist() == [9.0, 13.0, 5.0, 23.0]


def test_packed_tail_padding_and_segment_boundaries():
    batch = Collator(A, packing=True, row_length=10)([A.encode("AC"), A.encode("DEFGHIKL")])
    assert batch.block_seqlens == (10, 4, 6)
    assert batch.segment_ids[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert batch.padding_mask[1].tolist() == [False] * 4 + [True] * 6
    assert batch.positions[1].tolist() == [0, 1, 2, 3, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("packing", [False, True])
def test_masked_batches_stay_consistent(packing):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 126, (60,), generator=g).tolist()
    sequences = [A.encode(residues(n, i)) for i, n in enumerate(lengths)]
    batch = Collator(A, MaskingConfig(rate=0.2), packing=packing, row_length=128, seed=3)(sequences)
    if packing:
        placement = first_fit_decreasing([n + 2 for n in lengths], 128)
        in_order = [n for _, _, n in sorted(zip(placement.row, placement.offset, lengths))]
        assert padding_fraction(batch) < 0.1
    else:
        in_order = lengths
    check_consistent(batch, in_order)
    # The masking rate is exact per sequence, whichever row a sequence landed in.
    masked_per_sequence = torch.bincount(
        batch.residue_sequence[torch.isin(batch.residue_index, batch.masked_index)], minlength=len(lengths))
    assert masked_per_sequence.tolist() == [max(1, round(0.2 * n)) for n in in_order]


def test_first_fit_decreasing_with_a_row_cap():
    # Longest first into rows of 10, at most 2 rows: 9 -> row 0; 7 -> row 1; 5 fits nowhere;
    # 3 -> row 1 (10); 2 fits nowhere (9 + 2 > 10).
    lengths = [9, 2, 7, 3, 5]
    capped = first_fit_decreasing(lengths, 10, max_rows=2)
    assert capped.row == [0, -1, 1, 1, -1] and capped.offset[3] == 7 and capped.slot[3] == 1 and capped.rows == 2
    placed = [n for n, r in zip(lengths, capped.row) if r >= 0]
    again = first_fit_decreasing(placed, 10)
    assert again.rows == 2 and again.row == [r for r in capped.row if r >= 0]


def test_batch_of_sequences_keeps_order_and_masks_nothing():
    batch = batch_of_sequences(["MKV", "acdefghik", "W"])
    assert batch.num_sequences == 3 and batch.masked_index.numel() == 0
    assert torch.bincount(batch.residue_sequence).tolist() == [3, 9, 1]
    with pytest.raises(UserError, match=r"^sequence 1:3: unknown residue letter 'J'"):
        batch_of_sequences(["MKV", "KLJ"])
    assert batch_of_sequences(["MKV", "KLJ"], unknown_letters="x").tokens[1, 3].item() == A.index["X"]


# --------------------------------------------------------------------------- splits


def test_hash_split_is_stable_and_disjoint(data_root):
    # Pinned: a changed hash would silently move records between train and held-out sets.
    assert holdout_score("A0AUV4") == pytest.approx(0.948071213, abs=1e-9)
    path = data_root / VALID
    ids = [record.id for record in FastaReader(path)]
    held = {i for i in ids if in_split(i, "holdout", 0.1)}
    train = {i for i in ids if in_split(i, "train", 0.1)}
    assert held.isdisjoint(train) and held | train == set(ids)
    assert 430 < len(held) < 570  # 10% of 5,000, +-3 sd
    assert {i for i in ids if in_split(i, "holdout", 0.1)} == held
    assert sum(1 for _ in split_sequences(path, "holdout", 0.1)) == len(held)


# --------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("packing", [False, True])
def test_token_budget_crop_and_sequence_cap(data_root, packing):
    corpus = FastaCorpus(data_root / VALID, masking=MaskingConfig(), crop=126, batch_tokens=2048, max_sequences=24,
                         packing=packing, shuffle_buffer=256, seed=1)
    for batch in itertools.islice(corpus, 40):
        rows, length = batch.shape
        assert rows * length <= 2048 and batch.num_sequences <= 24
        assert length == 128 if packing else length % 8 == 0 and length <= 128
        per_sequence = torch.bincount(batch.residue_sequence, minlength=batch.num_sequences)
        assert per_sequence.max() <= 126 and per_sequence.min() >= 1
        check_consistent(batch, per_sequence.tolist())
        if packing:  # rows are filled: less than one short sequence of slack per row on average
            assert padding_fraction(batch) < 0.1 or batch.num_sequences == 24


def test_crop_is_a_random_window_of_the_record(tmp_path):
    long = residues(300, 99)
    path = write_fasta(tmp_path / "long.fasta", [("long", long)])
    starts = set()
    for seed in range(6):
        batch = next(iter(FastaCorpus(path, crop=50, batch_tokens=64, seed=seed)))
        window = A.decode(batch.tokens[0])
        assert len(window) == 50 and window in long
        starts.add(long.index(window))
    assert len(starts) > 1


def test_one_pass_covers_each_record_once_across_shards_and_workers(tmp_path):
    lengths = [10 + (7 * i) % 50 for i in range(120)]
    path = small_fasta(tmp_path, lengths)
    expected = sorted(residues(n, i) for i, n in enumerate(lengths))

    def decoded(batches):
        return [A.decode(b.tokens.flatten()[b.residue_index[b.residue_sequence == s]])
                for b in batches for s in range(b.num_sequences)]

    seen = []
    for rank in range(2):
        seen += decoded(FastaCorpus(path, crop=64, batch_tokens=512, infinite=False, shuffle_buffer=16,
                                    rank=rank, world_size=2))
    assert sorted(seen) == expected
    corpus = FastaCorpus(path, crop=64, batch_tokens=512, infinite=False, packing=True, rank=0, world_size=1)
    workers = DataLoader(corpus, batch_size=None, num_workers=2)
    assert sorted(decoded(workers)) == expected


def test_epochs_reshuffle_and_runs_repeat(tmp_path):
    path = small_fasta(tmp_path, [20] * 40)
    corpus = FastaCorpus(path, masking=MaskingConfig(), crop=32, batch_tokens=40 * 24, shuffle_buffer=40)
    first_epoch, second_epoch = itertools.islice(corpus, 2)  # 40 rows of 24: one batch per epoch
    assert first_epoch.num_sequences == second_epoch.num_sequences == 40
    assert not torch.equal(first_epoch.tokens, second_epoch.tokens)  # same records, new order
    assert torch.equal(first_epoch.tokens.sort(0).values, second_epoch.tokens.sort(0).values)
    again = next(iter(corpus))
    assert torch.equal(again.inputs, first_epoch.inputs) and torch.equal(again.masked_index, first_epoch.masked_index)
    corpus.set_epoch(1)
    assert torch.equal(next(iter(corpus)).tokens, second_epoch.tokens)


def test_streams_without_reading_the_whole_file(tmp_path, data_root):
    # A malformed record near the end: the first batch must come before the reader gets there.
    records = [(f"s{i}", residues(40, i)) for i in range(3000)] + [("bad", "ACDJ")]
    path = write_fasta(tmp_path / "late_error.fasta", records)
    corpus = FastaCorpus(path, crop=64, batch_tokens=1024, shuffle_buffer=64, infinite=False)
    batches = iter(corpus)
    assert next(batches).num_sequences > 0
    with pytest.raises(FastaError, match=r"late_error.fasta:6002:4: unknown residue letter 'J'"):
        list(batches)
    # The real 123k-record training file: a first batch in well under the time a full pass takes.
    start = time.perf_counter()
    next(iter(FastaCorpus(data_root / TRAIN, masking=MaskingConfig(), shuffle_buffer=1024)))
    assert time.perf_counter() - start < 5.0


def test_fixed_batches(data_root, tmp_path):
    path = data_root / VALID
    [first] = fixed_batches(path, 8, crop=64)
    assert first.num_sequences == 8 and first.masked_index.numel() == 0
    assert torch.equal(first.tokens, fixed_batches(path, 8, crop=64)[0].tokens)
    [masked] = fixed_batches(path, 8, crop=64, masking=MaskingConfig())
    assert torch.equal(masked.tokens, first.tokens) and masked.masked_index.numel() > 0
    assert torch.equal(masked.masked_index, fixed_batches(path, 8, crop=64, masking=MaskingConfig())[0].masked_index)
    chunks = fixed_batches(path, 8, chunk=3, crop=64)  # the same records, cropped the same way, in 3 + 3 + 2
    assert [c.num_sequences for c in chunks] == [3, 3, 2]
    assert [c.num_residues for c in chunks] and sum(c.num_residues for c in chunks) == first.num_residues
    with pytest.raises(CorpusError, match="only 1 records in split 'all', 2 are needed"):
        fixed_batches(write_fasta(tmp_path / "one.fa", [("a", "MK")]), 2)


# --------------------------------------------------------------------------- recipe -> corpus


def test_make_corpus_from_recipe_data(data_root):
    data = DataConfig(root=str(data_root), crop=62, batch_tokens=1024)
    train = make_corpus(data, MaskingConfig(), "train")
    valid = make_corpus(data, None, "valid")
    assert train.infinite and train.split == "all" and not valid.infinite and valid.path.name.endswith("valid.fasta.gz")
    assert next(iter(valid)).masked_index.numel() == 0
    held = DataConfig(root=str(data_root), valid=None, holdout_fraction=0.01)
    assert (make_corpus(held, None, "train").split, make_corpus(held, None, "valid").split) == ("train", "holdout")
    assert make_corpus(DataConfig(root=str(data_root), valid=None), None, "valid") is None


def test_data_errors_are_one_line_and_name_the_key(data_root, tmp_path):
    with pytest.raises(ValueError, match=r"batch_tokens 256 is less than one row of 520 tokens"):
        DataConfig(root=str(data_root), batch_tokens=256)  # the recipe refuses it: validate, as train does
    with pytest.raises(CorpusError, match=r"^data.batch_tokens: 256 is less than one row of 520 tokens"):
        FastaCorpus(data_root / DataConfig().train, batch_tokens=256)  # and the corpus, built without a recipe
    with pytest.raises(DataPathError, match="no such data file"):
        make_corpus(DataConfig(root=str(data_root), train="nope.fasta.gz"), None, "train")
    with pytest.raises(ValueError, match="holdout_fraction splits train only when valid is null"):
        DataConfig(holdout_fraction=0.1)


# --------------------------------------------------------------------------- data root


def test_data_root_precedence(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("PROTJEPA_DATA", str(tmp_path))
    assert paths.data_root(None) == tmp_path
    assert paths.data_root(str(data_root)) == data_root
    monkeypatch.delenv("PROTJEPA_DATA")
    assert paths.data_root(None).resolve() == data_root.resolve()  # shared/data beside the repo
    with pytest.raises(DataPathError, match=r"data.root / --data-root\): no such folder"):
        paths.data_root(str(tmp_path / "missing"))
    monkeypatch.setenv("PROTJEPA_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataPathError, match=r"from \$PROTJEPA_DATA"):
        paths.data_root(None)
    assert resolve(data_root, VALID).is_file()
    with pytest.raises(DataPathError, match=r"nope.fa: no such data file"):
        resolve(data_root, "nope.fa")


def test_no_data_root_says_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.delenv("PROTJEPA_DATA", raising=False)
    monkeypatch.setattr(paths, "_repo_root", lambda: tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataPathError) as info:
        paths.data_root()
    message = str(info.value)
    assert "\n" not in message
    assert "data.root" in message and "--data-root" in message and "PROTJEPA_DATA" in message
