"""A task's tables read into columns: CSV, TSV and FASTA (plain or gzip), joined on ``id``.

FASTA files go through :func:`protjepa.data.fasta.fasta_entries`; their fields are parts of
the header or the body (see :mod:`protjepa.evaluation.tasks`). A table holds at least one
record, and a row of a CSV or TSV file at most ``ROW_CHARS_PER_RESIDUE`` characters for each of
the spec's ``max_residues`` (a per-residue label row carries a number for each residue).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterator

from protjepa.data.fasta import fasta_entries, open_text
from protjepa.errors import UserError
from protjepa.files import bounded_lines
from protjepa.evaluation.tasks import TableSpec, TaskSpec
from protjepa.paths import resolve

ROW_CHARS_PER_RESIDUE = 16

class TaskDataError(UserError, ValueError):
    """A data file that does not match its spec; the message names the data file and line."""


def _fasta_part(header: str, body: str, part: str) -> str | None:
    words = header.split()
    if part == "id":
        return words[0] if words else ""
    if part == "body":
        return body
    if part == "description":
        return header.partition(" ")[2].strip()
    word = re.fullmatch(r"word(\d+)", part)
    if word:
        n = int(word.group(1))
        return words[n - 1] if 0 < n <= len(words) else None
    return next((w.partition("=")[2] for w in words[1:] if w.partition("=")[0] == part), None)


def read_table(table: TableSpec, fields: dict[str, str], root: Path,
               max_residues: int) -> tuple[dict[str, list[str]], list[str]]:
    """Field -> values, and where each record is (``file:line``); a file of no record is refused."""
    path = resolve(root, table.file)
    values: dict[str, list[str]] = {name: [] for name in fields}
    where: list[str] = []
    if table.format == "fasta":
        for header, body, line in fasta_entries(path, max_residues):
            for name, part in fields.items():
                value = _fasta_part(header, "".join(text for _, text in body), part)
                if value is None:
                    raise TaskDataError(f"{path}:{line}: header has no {part!r} (for field {name!r})")
                values[name].append(value)
            where.append(f"{path}:{line}")
        if not where:
            raise TaskDataError(f"{path}: no FASTA records (empty file)")
        return values, where
    limit = ROW_CHARS_PER_RESIDUE * max_residues
    csv.field_size_limit(max(csv.field_size_limit(), limit))  # a field may be a whole row
    with open_text(path, "task table") as handle:
        lines = (line for _, line in bounded_lines(handle, limit, path, TaskDataError))
        rows = csv.reader(lines, delimiter="," if table.format == "csv" else "\t")
        try:
            _read_rows(rows, table, fields, values, where, path)
        except csv.Error as exc:
            raise TaskDataError(f"{path}:{rows.line_num}: not {table.format.upper()}: {exc}") from None
    if not where:
        raise TaskDataError(f"{path}: no records, only the header row")
    return values, where


def _read_rows(rows, table: TableSpec, fields: dict[str, str], values: dict[str, list[str]], where: list[str],
               path: Path) -> None:
    first = next(rows, None)
    if first is None:
        raise TaskDataError(f"{path}: empty file")
    columns = first if table.header else [f"col{i + 1}" for i in range(len(first))]
    index = {}
    for name, column in fields.items():
        if column not in columns:
            raise TaskDataError(f"{path}: no column {column!r} for field {name!r} (columns: {', '.join(columns)})")
        index[name] = columns.index(column)
    body = rows if table.header else _chain(first, rows)
    for row in body:
        if len(row) != len(columns):
            raise TaskDataError(f"{path}:{rows.line_num}: {len(row)} columns where the header has {len(columns)}")
        for name, i in index.items():
            values[name].append(row[i])
        where.append(f"{path}:{rows.line_num}")


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def read_tables(spec: TaskSpec, tables: list[TableSpec], root: Path) -> tuple[dict[str, list[str]], dict[str, list]]:
    """Read and join (on ``id``, in the first table's order) a group of tables: field -> values,
    and field -> where each value came from (``file:line``)."""
    values, where = read_table(tables[0], spec.field_map(tables[0]), root, spec.max_residues)
    places = {name: where for name in values}
    for table in tables[1:]:
        more, more_where = read_table(table, spec.field_map(table), root, spec.max_residues)
        rows: dict[str, int] = {}
        for i, key in enumerate(more["id"]):
            if rows.setdefault(key, i) != i:
                raise TaskDataError(f"{more_where[i]}: id {key!r} occurs twice")
        missing = next((i for i, key in enumerate(values["id"]) if key not in rows), None)
        if missing is not None:
            raise TaskDataError(f"{table.file}: no record with id {values['id'][missing]!r} (from {where[missing]})")
        order = [rows[key] for key in values["id"]]
        for name, column in more.items():
            if name != "id":
                values[name] = [column[i] for i in order]
                places[name] = [more_where[i] for i in order]
    return values, places
