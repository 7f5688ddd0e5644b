"""Probe tasks as YAML specs: which files, which fields, what to predict, how to split.

A spec names its data relative to the data root (``protjepa.paths.data_root``)::

    name: stability
    description: TAPE stability (Rocklin designed mini-proteins), official split
    type: regression            # binary | multiclass | per_residue_classification
    metric: spearman            #   | per_residue_regression | retrieval | variant_effect
    fields: {sequence: seq, label: label}
    train: tape_stability/train.csv.gz
    test: tape_stability/test.csv.gz
    fast: {train: 3000, test: 1500}   # caps used by ``protjepa probe --fast``

Instead of ``train``/``test`` files, ``data`` (one table, or several joined on ``id``)
with a ``split`` rule: ``column`` (a field's value says train or test), ``hash`` (a
deterministic split by a hash of the sequence: identical sequences land on the same
side), ``cross_validation`` (folds by the same hash; out-of-fold predictions are scored)
or ``all`` (retrieval and variant effects, which train nothing).

A table is a file name or ``{file, format, header, fields}``; ``format`` (csv, tsv, fasta;
plain or gzip) defaults from the name. ``fields`` maps what the task needs (``sequence``,
``label``, ``id``, ``mask``, a split field) to a column name, or for FASTA to ``id``,
``body`` (the sequence lines), ``description``, ``word<N>`` (N-th word of the header) or
``KEY`` (a ``KEY=VALUE`` word of the header). Per-residue labels are one character per
residue (``classes`` lists them) or numbers joined by ``separator``; a ``mask`` field
(one ``1``/``0`` per residue) leaves out residues marked ``0``.
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Union

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from protjepa.alphabet import ESM_ALPHABET
from protjepa.data.fasta import clean_letters, open_text, residue_pattern
from protjepa.errors import UserError
from protjepa.paths import resolve
from protjepa.yamlio import Strict, YamlLines, first_error, located, read_yaml

TaskType = Literal[
    "regression",
    "binary",
    "multiclass",
    "per_residue_classification",
    "per_residue_regression",
    "retrieval",
    "variant_effect",
]
PER_RESIDUE = ("per_residue_classification", "per_residue_regression")
TRAINED = ("regression", "binary", "multiclass") + PER_RESIDUE
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".fasta": "fasta", ".fa": "fasta", ".faa": "fasta"}
TRAIN, TEST, LEFT_OUT = 0, 1, -1


class TaskSpecError(UserError, ValueError):
    """A task spec that cannot be used; the message names the file, the line and the key path."""


class TaskDataError(UserError, ValueError):
    """A data file that does not match its spec; the message names the data file and line."""


class TableSpec(Strict):
    file: str
    format: Literal["csv", "tsv", "fasta"] | None = Field(None, description="default: from the file name")
    header: bool = Field(True, description="csv/tsv: the first row names the columns (else col1, col2, ...)")
    fields: dict[str, str] = Field(default_factory=dict, description="task field -> column / FASTA part")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"file": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _format(self):
        if self.format is None:
            suffixes = [s for s in Path(self.file).suffixes if s != ".gz"]
            self.format = FORMATS.get(suffixes[-1].lower() if suffixes else "")
            if self.format is None:
                raise ValueError(f"cannot tell the format of {self.file!r} from its name: give format: csv|tsv|fasta")
        return self


Tables = Annotated[list[TableSpec], Field(min_length=1)]


class ColumnSplit(Strict):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    rule: Literal["column"]
    field: str = Field(description="the field (mapped in fields) whose value places a record")
    train: list[str]
    test: list[str]

    @field_validator("train", "test", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


class HashSplit(Strict):
    rule: Literal["hash"]
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class CrossValidation(Strict):
    rule: Literal["cross_validation"]
    folds: int = Field(5, ge=2)
    seed: int = 0


class AllRecords(Strict):
    rule: Literal["all"]


RULES = ("column", "hash", "cross_validation", "all")
SplitRule = Annotated[Union[ColumnSplit, HashSplit, CrossValidation, AllRecords], Field(discriminator="rule")]


class Caps(Strict):
    """Most records to keep per part (a deterministic subsample by a hash of the sequence)."""

    train: int | None = Field(None, ge=1)
    test: int | None = Field(None, ge=1)
    records: int | None = Field(None, ge=1, description="cross_validation / all: the whole set")


class TaskSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str
    type: TaskType
    metric: str
    default: bool = Field(True, description="part of the default suite (else run only when named)")
    notes: list[str] = Field(default_factory=list, description="caveats printed with the result")
    fields: dict[str, str] = Field(default_factory=dict, description="default field map of every table")
    data: Tables | None = None
    train: Tables | None = None
    test: Tables | None = None
    split: SplitRule | None = None
    classes: list[str] | None = Field(None, description="class labels in order (per-residue: one character each)")
    positive: str | None = Field(None, description="binary / per-residue AUC: the positive label")
    separator: str | None = Field(None, description="per_residue_regression: what separates the numbers")
    missing: float | None = Field(None, description="per_residue_regression: the value meaning 'no value'")
    levels: dict[str, int] = Field(
        default_factory=lambda: {"family": 4, "superfamily": 3, "fold": 2},
        description="retrieval: level -> number of leading dot-separated label parts",
    )
    ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 10, 30], min_length=1)
    wild_type: str | None = Field(None, description="variant_effect: the wild-type sequence, or 'consensus'")
    unknown_letters: Literal["error", "x"] = "error"
    fast: Caps = Field(default_factory=Caps)

    _source: str = "<spec>"

    @field_validator("data", "train", "test", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return value if isinstance(value, list) or value is None else [value]

    @field_validator("classes", mode="before")
    @classmethod
    def _class_strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("positive", mode="before")
    @classmethod
    def _positive_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value

    @property
    def source(self) -> str:
        return self._source

    @property
    def rule(self) -> str:
        return "files" if self.split is None else self.split.rule

    def tables(self) -> dict[str, list[TableSpec]]:
        return {"data": self.data} if self.data is not None else {"train": self.train, "test": self.test}

    def field_map(self, table: TableSpec) -> dict[str, str]:
        return {**self.fields, **table.fields}

    def metrics(self) -> list[str]:
        """Every metric this task reports; ``metric`` is one of them."""
        if self.type in ("regression", "per_residue_regression", "variant_effect"):
            return ["spearman", "pearson"]
        if self.type == "binary":
            return ["auc", "accuracy"]
        if self.type == "retrieval":
            return [f"{level}_recall@{k}" for level in self.levels for k in self.ks]
        two = self.classes is not None and len(self.classes) == 2
        return ["accuracy", "macro_f1"] + (["auc"] if self.type == "per_residue_classification" and two else [])


# --------------------------------------------------------------------------- spec checks


def _problems(spec: TaskSpec) -> Iterator[tuple[tuple, str]]:
    """(key path, message) for what the schema alone cannot check."""
    has_data, has_files = spec.data is not None, spec.train is not None or spec.test is not None
    if has_data == has_files or (has_files and (spec.train is None or spec.test is None)):
        yield ("data",), "give either data (with a split rule) or both train and test"
        return
    if spec.data is None and spec.split is not None:
        yield ("split",), "train/test files are the split: drop split, or use data"
    if spec.data is not None and spec.split is None:
        yield ("split",), "data needs a split rule (column | hash | cross_validation | all)"
    untrained = spec.type in ("retrieval", "variant_effect")
    if spec.split is not None and untrained != (spec.rule == "all"):
        needed = "all" if untrained else "column|hash|cross_validation"
        yield ("split", "rule"), f"a {spec.type} task needs rule {needed}"
    if spec.metric not in spec.metrics():
        yield ("metric",), f"{spec.type} reports {'|'.join(spec.metrics())}"
    for group, tables in spec.tables().items():
        names = [set(spec.field_map(t)) for t in tables]
        for i, table in enumerate(tables):
            if len(tables) > 1 and "id" not in names[i]:
                yield (group, i, "fields"), "several tables are joined on id: map id in each"
            for other in range(i):
                clash = sorted((names[i] & names[other]) - {"id"} - set(spec.fields))
                if clash:
                    yield (group, i, "fields"), f"{clash[0]} is also given by {group}[{other}]"
        given = set().union(*names)
        for needed in ["sequence", "label"] + ([spec.split.field] if spec.rule == "column" else []):
            if needed not in given:
                yield (group,), f"no table maps the field {needed!r} (fields: {{{needed}: COLUMN}})"
    if spec.type == "binary" and spec.positive is None:
        yield ("positive",), "a binary task names its positive label"
    if spec.type == "per_residue_classification":
        if not spec.classes or any(len(c) != 1 for c in spec.classes):
            yield ("classes",), "per-residue classes are single characters, one per residue"
        elif spec.metric == "auc" and spec.positive not in spec.classes:
            yield ("positive",), f"AUC needs the positive class, one of {'|'.join(spec.classes)}"
    if spec.type == "per_residue_regression" and spec.separator is None:
        yield ("separator",), "per-residue numbers need their separator (e.g. ',')"
    if spec.type == "variant_effect" and not spec.wild_type:
        yield ("wild_type",), "give the wild-type sequence, or 'consensus'"
    whole = spec.rule in ("cross_validation", "all")
    for part in ("train", "test", "records"):
        if getattr(spec.fast, part) is not None and (part == "records") != whole:
            yield ("fast", part), f"rule {spec.rule} caps {'records' if whole else 'train and test'}"


def _raise(source: str, lines: YamlLines | None, loc: tuple, message: str) -> None:
    raise TaskSpecError(located(source, lines, loc, message))


def parse_spec(raw: Any, source: str = "<spec>", text: str | None = None) -> TaskSpec:
    lines = YamlLines(text) if text is not None else None
    if not isinstance(raw, dict):
        raise TaskSpecError(f"{source}: a task spec must be a mapping, got {type(raw).__name__}")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        loc, message = first_error(exc)
        if loc[:1] == ("split",) and len(loc) > 1 and loc[1] in RULES:
            loc = loc[:1] + loc[2:]  # pydantic puts the union member's tag in the path; YAML has no such key
        _raise(source, lines, loc, message)
    for loc, message in _problems(spec):
        _raise(source, lines, loc, message)
    spec._source = source
    return spec


def load_spec(path: str | Path) -> TaskSpec:
    path = Path(path)
    raw, text = read_yaml(path, TaskSpecError, "task spec")
    return parse_spec(raw, str(path), text)


# --------------------------------------------------------------------------- registry


class TaskRegistry:
    """Task name -> spec: the shipped specs, then the user's files or folders of ``*.yaml``."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def add(self, spec: TaskSpec) -> None:
        old = self._specs.get(spec.name)
        if old is not None:
            raise TaskSpecError(f"{spec.source}: task {spec.name!r} is already defined in {old.source}")
        self._specs[spec.name] = spec

    def load(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            for file in sorted(path.glob("*.yaml")):
                self.add(load_spec(file))
        elif path.is_file():
            self.add(load_spec(path))
        else:
            raise TaskSpecError(f"{path}: no such task spec file or folder")

    def get(self, name: str) -> TaskSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise TaskSpecError(f"unknown task {name!r} (known: {', '.join(self.names())})") from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def select(self, names: list[str] | None = None) -> list[TaskSpec]:
        """The named tasks (``all``: every one), or the default suite when ``names`` is empty."""
        if not names:
            return [s for n, s in sorted(self._specs.items()) if s.default]
        if names == ["all"]:
            return [self._specs[n] for n in self.names()]
        return [self.get(n) for n in names]


def task_registry(extra: list[str | Path] | tuple = ()) -> TaskRegistry:
    registry = TaskRegistry()
    with resources.as_file(resources.files("protjepa.evaluation") / "specs") as shipped:
        registry.load(shipped)
    for path in extra:
        registry.load(path)
    return registry


# --------------------------------------------------------------------------- reading tables


def _fasta(path: Path) -> Iterator[tuple[str, str, int]]:
    """(header, body, line) per record. Not ``FastaReader``: label files hold digits, not residues."""
    header, body, start = None, [], 0
    with open_text(path) as lines:
        for lineno, line in enumerate(lines, 1):
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(body), start
                header, body, start = line[1:].strip(), [], lineno
            elif line.strip():
                if header is None:
                    raise TaskDataError(f"{path}:{lineno}: data before the first '>' header")
                body.append(line.strip())
    if header is not None:
        yield header, "".join(body), start


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


def read_table(table: TableSpec, fields: dict[str, str], root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Field -> values, and where each record is (``file:line``)."""
    path = resolve(root, table.file)
    values: dict[str, list[str]] = {name: [] for name in fields}
    where: list[str] = []
    if table.format == "fasta":
        for header, body, line in _fasta(path):
            for name, part in fields.items():
                value = _fasta_part(header, body, part)
                if value is None:
                    raise TaskDataError(f"{path}:{line}: header has no {part!r} (for field {name!r})")
                values[name].append(value)
            where.append(f"{path}:{line}")
        return values, where
    with open_text(path) as handle:
        rows = csv.reader(handle, delimiter="," if table.format == "csv" else "\t")
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
    return values, where


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def read_tables(spec: TaskSpec, tables: list[TableSpec], root: Path) -> tuple[dict[str, list[str]], dict[str, list]]:
    """Read and join (on ``id``, in the first table's order) a group of tables: field -> values,
    and field -> where each value came from (``file:line``)."""
    values, where = read_table(tables[0], spec.field_map(tables[0]), root)
    places = {name: where for name in values}
    for table in tables[1:]:
        more, more_where = read_table(table, spec.field_map(table), root)
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


# --------------------------------------------------------------------------- task data


def sequence_hash(sequence: str, seed: int = 0) -> int:
    """A stable 64-bit hash: deterministic splits and subsamples that follow the sequence, not the file order."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{sequence}".encode(), digest_size=8).digest(), "little")


@dataclass
class TaskData:
    """A task's records. ``part`` places each: TRAIN / TEST, the fold under cross-validation
    (every record is tested once), 0 under rule ``all``, LEFT_OUT when subsampled or dropped."""

    spec: TaskSpec
    sequences: list[str]
    targets: list  # float | str | per-residue array (class index, -1 = no label; or float, NaN = no value)
    where: list[str]
    part: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def part_names(self) -> dict[int, str]:
        if self.spec.rule == "cross_validation":
            return {k: f"fold {k}" for k in range(self.spec.split.folds)}
        if self.spec.rule == "all":
            return {0: "records"}
        return {TRAIN: "train", TEST: "test"}

    def count(self, part: int) -> int:
        return int((self.part == part).sum())

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train indices, test indices) per fit: one for train/test splits, k under cross-validation."""
        if self.spec.rule == "cross_validation":
            kept = self.part >= 0
            return [(np.flatnonzero(kept & (self.part != k)), np.flatnonzero(self.part == k)) for k in self.part_names]
        return [(np.flatnonzero(self.part == TRAIN), np.flatnonzero(self.part == TEST))]

    @property
    def trained(self) -> np.ndarray:
        """Bool per record: fits a probe (the train part; every kept record under cross-validation)."""
        if self.spec.rule == "all":
            return np.zeros(len(self.part), dtype=bool)
        return self.part == TRAIN if self.spec.rule in ("files", "column", "hash") else self.part >= 0

    @property
    def scored(self) -> np.ndarray:
        """Bool per record: scored (the test part; every kept record under cross-validation or ``all``)."""
        return self.part == TEST if self.spec.rule in ("files", "column", "hash") else self.part >= 0

    def leave_out(self, drop: np.ndarray, why: str) -> None:
        """Drop the records where ``drop`` is True, with a note counting them per part."""
        counts = {name: int((drop & (self.part == p)).sum()) for p, name in self.part_names.items()}
        counts = {k: v for k, v in counts.items() if v}
        self.part = np.where(drop, LEFT_OUT, self.part)
        if counts:
            self.notes.append(f"dropped {why}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))

    def subsample(self, caps: Caps, seed: int = 0) -> None:
        """Keep at most the capped number of records per part, the lowest hashes of their sequences."""
        if self.spec.rule in ("cross_validation", "all"):
            if caps.records is not None and (self.part >= 0).sum() > caps.records:
                self._keep_lowest(self.part >= 0, caps.records, seed, "records")
            return
        for part, limit in ((TRAIN, caps.train), (TEST, caps.test)):
            chosen = self.part == part
            if limit is not None and chosen.sum() > limit:
                self._keep_lowest(chosen, limit, seed, self.part_names[part])

    def _keep_lowest(self, chosen: np.ndarray, limit: int, seed: int, name: str) -> None:
        index = np.flatnonzero(chosen)
        hashes = np.array([sequence_hash(self.sequences[i], seed) for i in index], dtype=np.uint64)
        drop = index[np.lexsort((index, hashes))[limit:]]
        self.part[drop] = LEFT_OUT
        self.notes.append(f"{name} subsampled to {limit} of {len(index)} (deterministic, seed {seed})")


def load_task(spec: TaskSpec, root: str | Path) -> TaskData:
    root = Path(root)
    values: dict[str, list[str]] = {}
    places: dict[str, list[str]] = {}
    part: list[np.ndarray] = []
    for group, tables in spec.tables().items():
        group_values, group_places = read_tables(spec, tables, root)
        for name, column in group_values.items():
            values.setdefault(name, []).extend(column)
            places.setdefault(name, []).extend(group_places[name])
        part.append(np.full(len(group_values["sequence"]), TEST if group == "test" else TRAIN, dtype=np.int64))
    sequences = _clean_sequences(spec, values["sequence"], places["sequence"])
    data = TaskData(spec, sequences, _targets(spec, values, sequences, places), places["sequence"],
                    np.concatenate(part), list(spec.notes))
    _assign_split(data, values)
    return data


def _clean_sequences(spec: TaskSpec, raw: list[str], where: list[str]) -> list[str]:
    pattern = residue_pattern(ESM_ALPHABET)
    out = []
    for text, place in zip(raw, where):
        try:
            cleaned, _ = clean_letters(text.strip(), spec.unknown_letters, place, pattern)
        except UserError as exc:
            raise TaskDataError(f"{exc} (task {spec.name}, {spec.source})") from None
        if not cleaned:
            raise TaskDataError(f"{place}: empty sequence")
        out.append(cleaned)
    return out


def _number(text: str, place: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise TaskDataError(f"{place}: {name} {text!r} is not a number") from None


def _targets(spec: TaskSpec, values: dict[str, list[str]], sequences: list[str], places: dict[str, list]) -> list:
    labels, where = values["label"], places["label"]
    if spec.type in ("regression", "variant_effect"):
        return [_number(t, p, "label") for t, p in zip(labels, where)]
    if spec.type in ("binary", "multiclass", "retrieval"):
        labels = [t.strip() for t in labels]
        if spec.type == "binary":
            seen = sorted(set(labels))
            if len(seen) > 2 or spec.positive not in seen:
                raise TaskDataError(f"{spec.source}: positive: labels are {', '.join(seen[:5])}: "
                                    f"a binary task needs two values, one of them {spec.positive!r}")
        if spec.classes is not None:
            bad = next((i for i, t in enumerate(labels) if t not in spec.classes), None)
            if bad is not None:
                raise TaskDataError(f"{where[bad]}: label {labels[bad]!r} is not in classes")
        return labels
    masks = values.get("mask")
    letters = np.full(256, -1, dtype=np.int8)  # label character -> class index
    letters[[ord(c) for c in spec.classes or ()]] = np.arange(len(spec.classes or ()))
    out = []
    for i, (text, sequence, place) in enumerate(zip(labels, sequences, where)):
        if spec.type == "per_residue_classification":
            target = letters[np.frombuffer(text.strip().encode(), dtype=np.uint8)]
            if (target < 0).any():
                raise TaskDataError(f"{place}: label letter {text.strip()[int(np.argmax(target < 0))]!r} "
                                    f"is not in classes {''.join(spec.classes)}")
        else:
            target = np.array([_number(t, place, "label") for t in text.split(spec.separator)], dtype=np.float32)
            if spec.missing is not None:
                target[target == spec.missing] = np.nan
        if len(target) != len(sequence):
            raise TaskDataError(f"{place}: {len(target)} labels for a sequence of {len(sequence)} residues")
        if masks is not None:
            keep = np.frombuffer(masks[i].strip().encode(), dtype=np.uint8) == ord("1")
            if len(keep) != len(sequence):
                raise TaskDataError(f"{places['mask'][i]}: mask of {len(keep)} for a sequence of "
                                    f"{len(sequence)} residues")
            target = np.where(keep, target, -1 if target.dtype == np.int8 else np.nan).astype(target.dtype)
        out.append(target)
    return out


def _assign_split(data: TaskData, values: dict[str, list[str]]) -> None:
    rule = data.spec.split
    if rule is None or rule.rule == "all":
        if rule is not None:
            data.part[:] = 0
        return
    if rule.rule == "column":
        column = np.array([v.strip() for v in values[rule.field]], dtype=object)
        data.part = np.select([np.isin(column, rule.train), np.isin(column, rule.test)], [TRAIN, TEST], LEFT_OUT)
        if (data.part == LEFT_OUT).any():
            seen = sorted(set(column[data.part == LEFT_OUT]))
            data.notes.append(f"{int((data.part == LEFT_OUT).sum())} records with {rule.field} "
                              f"{'|'.join(seen[:5])} are in neither train nor test")
        return
    hashes = np.array([sequence_hash(s, rule.seed) for s in data.sequences], dtype=np.uint64)
    if rule.rule == "hash":
        cut = np.uint64(int(rule.test_fraction * 2**64))
        data.part = np.where(hashes < cut, TEST, TRAIN)
        data.notes.append(f"no official split: test = {rule.test_fraction:.0%} of records by a hash of the sequence "
                          f"(seed {rule.seed})")
    else:
        data.part = (hashes % np.uint64(rule.folds)).astype(np.int64)
        data.notes.append(f"{rule.folds}-fold cross-validation (folds by a hash of the sequence, seed {rule.seed}); "
                          f"out-of-fold predictions are scored")
