r"""Probe tasks as YAML specs: which files, which fields, what to predict, how to split.

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

``label_pattern`` derives a sequence-level label from its field: a regular expression with
one group, searched through the field; the label is what the group captures. It runs on the
``regex`` engine (the syntax of Python's ``re``) under a time bound, so a pattern that backtracks
without end (``^(a+)+$`` on a long label) is an error naming the label's line, not a hang. A field may
match several times (a list of values): the matches must agree, and a record whose matches
capture different values is dropped with a note; a field with no match is an error. The
first digit of ``;``-separated EC numbers (``3.5.2.6;3.1.1.1`` -> ``3``)::

    label_pattern: '(?:^|;)\s*(\d+)\.'

Only regular files are read (a named pipe or a device is refused before it is opened), and a
sequence or FASTA line longer than ``max_residues`` (100,000, more than any protein), or a CSV/TSV
row longer than 16 characters a residue of it, is refused at its line.

A ``variant_effect`` task scores variants against ``wild_type``: the sequence itself,
``consensus`` (the most common letter at each position of the variants), or a FASTA file
of one record, relative to the data root: ``wild_type: {file: folder/wild_type.fasta.gz}``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Union

import regex
from pydantic import ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from protjepa.errors import UserError
from protjepa.files import MAX_RESIDUES
from protjepa.paths import FOLDER_NAME
from protjepa.yamlio import Strict, YamlLines, first_error, located, misplaced_boolean, read_yaml

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


class TaskSpecError(UserError, ValueError):
    """A task spec that cannot be used; the message names the file, the line and the key path."""


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


class WildTypeFile(Strict):
    file: str = Field(description="FASTA file (relative to the data root) holding the one wild-type record")


# a mapping is a file, anything else must be a sequence: one error from the form given, not one per form
WildType = Annotated[
    Union[Annotated[str, Tag("sequence")], Annotated[WildTypeFile, Tag("file")]],
    Discriminator(lambda value: "file" if isinstance(value, (dict, WildTypeFile)) else "sequence"),
]


class Caps(Strict):
    """Most records to keep per part (a deterministic subsample by a hash of the sequence)."""

    train: int | None = Field(None, ge=1)
    test: int | None = Field(None, ge=1)
    records: int | None = Field(None, ge=1, description="cross_validation / all: the whole set")


class TaskSpec(Strict):
    name: str = Field(pattern=FOLDER_NAME)
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
    label_pattern: str | None = Field(None, description="regex with one group: the label is what it captures")
    wild_type: WildType | None = Field(
        None, description="variant_effect: the wild-type sequence, 'consensus', or {file: FASTA}")
    unknown_letters: Literal["error", "x"] = "error"
    max_residues: int = Field(MAX_RESIDUES, ge=8, description="longest sequence (and FASTA line) read; a longer one is "
                                                                "refused at its line (a damaged or wrong file)")
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
        yield ("wild_type",), "give the wild-type sequence, 'consensus' or {file: FASTA}"
    if spec.label_pattern is not None:
        if spec.type in PER_RESIDUE:
            yield ("label_pattern",), "a label pattern derives one label per sequence, not per residue"
        else:
            try:
                groups = regex.compile(spec.label_pattern).groups
            except regex.error as exc:
                yield ("label_pattern",), f"not a regular expression: {exc}"
            else:
                if groups != 1:
                    yield ("label_pattern",), f"needs exactly one group (the label), has {groups}"
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
    found = misplaced_boolean(raw, TaskSpec)  # pydantic alone reads ``default: 1`` as true, ``seed: true`` as 1
    if found is not None:
        _raise(source, lines, *found)
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        loc, message = first_error(exc)
        tags = {"split": RULES, "wild_type": ("sequence", "file")}.get(loc[0] if loc else None, ())
        if len(loc) > 1 and loc[1] in tags:
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
        elif path.exists():  # a file; one that is not a regular file is refused as it is read
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
