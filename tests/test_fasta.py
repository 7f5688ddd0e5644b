"""The FASTA reader: real files, format corners, and one-line errors naming file:line."""
from __future__ import annotations

import gzip
import logging

import pytest

from protjepa.data.fasta import FastaError, FastaReader, write_fasta
from protjepa.errors import UserError

VALID = "pretrain_swissprot50/swissprot2014_50_valid.fasta.gz"


def error_of(path, **kwargs) -> str:
    with pytest.raises(FastaError) as info:
        list(FastaReader(path, **kwargs))
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, UserError)
    return message


def test_real_corpus_file(data_root):
    reader = FastaReader(data_root / VALID)
    records = list(reader)
    assert len(records) == reader.records == 5000  # SOURCE.md: 5,000 valid records
    first, second = records[:2]
    assert (first.id, first.description, first.line) == ("A0AUV4", "", 1)
    assert (second.id, second.line) == ("A0B9D8", 3)  # header on line 1, sequence on one line
    assert first.sequence.startswith("MPAHIEEELPPPSPQPSNPEDGELYSQYKVVRTLGHGTYAKVLLAKHWLTGTPVAVKV")
    assert reader.residues == sum(len(r.sequence) for r in records)
    assert reader.replaced == {}


def test_lowercase_multiline_headers_with_descriptions(data_root):
    # SCOPe: lowercase letters, wrapped lines, descriptions after the id.
    scope = data_root / "scope40" / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.03.fa.gz"
    reader = FastaReader(scope)
    first = next(iter(reader))
    assert first.id == "d1dlwa_"
    assert first.description.startswith("a.1.1.1 (A:) Protozoan/bacterial hemoglobin")
    assert first.sequence == (
        "SLFEQLGGQAAVQAVTAQFYANIQADATVATFFNGIDMPNQTNKTAAFLCAALGGPNAWT"
        "GRNLKEVHANMGVSNAQFTTVIGHLRSALTGAGVAAALVEQTVAVAETVRGDVVTV"
    )


def test_gzip_told_by_magic_bytes_not_name(tmp_path):
    text = ">a desc\nACDE\n>b\nKLMN\n"
    gz_named_plain = tmp_path / "plain.fasta.gz"
    gz_named_plain.write_text(text)
    plain_named_gz = tmp_path / "compressed.fasta"
    plain_named_gz.write_bytes(gzip.compress(text.encode()))
    for path in (gz_named_plain, plain_named_gz):
        assert [(r.id, r.description, r.sequence, r.line) for r in FastaReader(path)] == [
            ("a", "desc", "ACDE", 1), ("b", "", "KLMN", 3)]


def test_blank_lines_crlf_inner_spaces(tmp_path):
    path = tmp_path / "x.fa"
    path.write_bytes(b"\r\n>s1  some  words \r\nAC DE\r\n\r\nfg\r\n>s2\r\nK\r\n")
    records = list(FastaReader(path))
    assert [(r.id, r.description, r.sequence, r.line) for r in records] == [
        ("s1", "some  words", "ACDEFG", 2), ("s2", "", "K", 6)]


def test_write_fasta_round_trip(tmp_path):
    pairs = [("one first", "ACDEFGHIKLMNPQRSTVWY"), ("two", "MK")]
    for name in ("w.fasta", "w.fasta.gz"):
        path = write_fasta(tmp_path / name, pairs, width=7)
        records = list(FastaReader(path))
        assert [(f"{r.id} {r.description}".strip(), r.sequence) for r in records] == pairs
        assert records[1].line == 5  # 20 residues at width 7 take three lines


@pytest.mark.parametrize("content, line, what", [
    ("ACDE\n>a\nKL\n", 1, "sequence data before the first '>' header"),
    ("\n\n>a\nAC\n>b\n>c\nKL\n", 5, "record 'b' has no sequence"),
    (">a\nAC\n>b\n", 3, "record 'b' has no sequence"),
    (">a\nAC\n>  \nKL\n", 3, "header with no id"),
    (">a\nACDE\nKLJ*\n", 3, "unknown residue letter 'J'"),
])
def test_malformed_input_names_file_and_line(tmp_path, content, line, what):
    path = tmp_path / "bad.fasta"
    path.write_text(content)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}")
    assert what in message


def test_unknown_letter_error_names_column(tmp_path):
    path = write_fasta(tmp_path / "u.fasta", [("a", "ACDEF"), ("b", "KLM*N")])
    assert error_of(path).startswith(f"{path}:4:4: unknown residue letter '*'")


def test_unknown_letters_x_maps_and_counts(tmp_path, caplog):
    path = write_fasta(tmp_path / "u.fasta", [("a", "ACJDE"), ("b", "K*LjM"), ("c", "MK")])
    reader = FastaReader(path, unknown_letters="x")
    with caplog.at_level(logging.WARNING):
        records = list(reader)
    assert [r.sequence for r in records] == ["ACXDE", "KXLXM", "MK"]
    assert reader.replaced == {"J": 2, "*": 1}
    assert "3 unknown residue letters mapped to X" in caplog.text
    list(reader)  # a second pass counts afresh
    assert sum(reader.replaced.values()) == 3


def test_missing_empty_and_truncated_files(tmp_path):
    assert error_of(tmp_path / "nope.fasta") == f"{tmp_path / 'nope.fasta'}: no such FASTA file"
    empty = tmp_path / "empty.fasta"
    empty.write_text("\n\n")
    assert "no FASTA records" in error_of(empty)
    truncated = tmp_path / "cut.fasta.gz"
    truncated.write_bytes(gzip.compress((">a\n" + "ACDEFGHIK" * 5000 + "\n>b\nKL\n").encode())[:-40])
    assert "corrupt or truncated gzip" in error_of(truncated)
    assert error_of(tmp_path).startswith(f"{tmp_path}: a folder, not a regular file")
