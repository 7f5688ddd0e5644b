"""Data files in records (provenance.json, probe results) are named relative to the data root with
their digests, so that a record reads the same on any machine and names the very file it used."""
from __future__ import annotations

import hashlib
import json

import pytest

from protjepa.errors import UserError
from protjepa.evaluation.leakage import LeakageError, run_corpus
from protjepa.provenance import FILE, file_record, recorded_file


def test_a_file_under_the_data_root_is_recorded_relative_to_it(tmp_path):
    root = tmp_path / "data"
    (root / "corpus").mkdir(parents=True)
    (root / "corpus" / "a.fasta").write_text(">a\nMKV\n")
    record = file_record(root / "corpus" / "a.fasta", root)
    assert record == {"path": "corpus/a.fasta", "bytes": 7, "sha256": hashlib.sha256(b">a\nMKV\n").hexdigest()}
    outside = tmp_path / "elsewhere.fasta"
    outside.write_text(">b\nMK\n")
    assert file_record(outside, root)["path"] == str(outside.resolve())
    # read back under another machine's root: found, and checked by digest
    moved = tmp_path / "moved"
    (moved / "corpus").mkdir(parents=True)
    (moved / "corpus" / "a.fasta").write_text(">a\nMKV\n")
    assert recorded_file(record, [moved], "run/provenance.json") == moved / "corpus" / "a.fasta"
    assert recorded_file(record, [tmp_path, root], "run/provenance.json") == root / "corpus" / "a.fasta"
    (moved / "corpus" / "a.fasta").write_text(">a\nMKL\n")
    with pytest.raises(UserError, match=r"a.fasta: not the file run/provenance.json records \(its SHA-256 differs\)"):
        recorded_file(record, [moved], "run/provenance.json")


def test_the_leakage_check_finds_a_run_s_corpus_under_the_probe_s_data_root_or_the_run_s(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "c.fasta").write_text(">a\nMKV\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / FILE).write_text(json.dumps({"data": {"train": file_record(root / "c.fasta", root)}}))
    assert run_corpus(run, root) == [root / "c.fasta"]
    with pytest.raises(LeakageError, match=r"c.fasta: the data file .* records is not there .*: pass --corpus FASTA"):
        run_corpus(run, tmp_path)
    # the tasks under another root: the corpus is found where the run trained on it
    (run / FILE).write_text(json.dumps({"data_root": str(root), "data": {"train": file_record(root / "c.fasta", root)}}))
    assert run_corpus(run, tmp_path) == [root / "c.fasta"]
