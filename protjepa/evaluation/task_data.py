"""A task's records, targets and split: what a probe fits and scores.

``part`` places each record: TRAIN / TEST, its fold under cross-validation, 0 under rule
``all``, LEFT_OUT when subsampled or dropped.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import regex

from protjepa.alphabet import ESM_ALPHABET
from protjepa.data.fasta import clean_letters, fasta_entries, residue_pattern
from protjepa.errors import UserError
from protjepa.files import WHY_LIMIT
from protjepa.evaluation.tables import TaskDataError, read_tables
from protjepa.evaluation.tasks import Caps, TaskSpec
from protjepa.paths import DataPathError, resolve

TRAIN, TEST, LEFT_OUT = 0, 1, -1
# A label_pattern's search through one field: an honest pattern takes microseconds; one that
# backtracks without end ((a+)+ on a long label) is stopped here.
PATTERN_SECONDS = 1.0


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
    wild_type: str | None = None  # variant_effect: the spec's sequence or file; None for 'consensus'

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
    disagree = None
    if spec.label_pattern is not None:
        values["label"], disagree = extract_labels(spec.label_pattern, values["label"], places["label"])
    data = TaskData(spec, sequences, _targets(spec, values, sequences, places), places["sequence"],
                    np.concatenate(part), list(spec.notes), _wild_type(spec, root))
    _assign_split(data, values)
    if disagree is not None:
        data.leave_out(disagree, "records whose label_pattern matches disagree")
    _flag_test_in_train(data)
    return data


def _flag_test_in_train(data: TaskData) -> None:
    """A note when every test sequence is also a training one (train and test the same file, or a copy):
    the score would be on records the probe was fit on."""
    if data.spec.rule not in ("files", "column", "hash"):
        return
    train = {data.sequences[i] for i in np.flatnonzero(data.part == TRAIN)}
    test = np.flatnonzero(data.part == TEST)
    if len(test) and all(data.sequences[i] in train for i in test):
        files = "" if data.spec.rule != "files" else f" ({', '.join(t.file for t in data.spec.test)} and " \
                                                      f"{', '.join(t.file for t in data.spec.train)})"
        data.notes.append(f"WARNING: every test sequence is also a training sequence{files}: the score is on "
                          "records the probe was fit on (train and test the same file?)")


def extract_labels(pattern: str, fields: list[str], where: list[str]) -> tuple[list[str], np.ndarray]:
    """The label each field's matches of ``pattern`` capture (its one group), and True where
    they disagree (the label is then the first match's, and the record is to be dropped).
    Each field's search is bounded in time (``PATTERN_SECONDS``)."""
    compiled = regex.compile(pattern)
    labels, disagree = [], np.zeros(len(fields), dtype=bool)
    for i, (text, place) in enumerate(zip(fields, where)):
        try:
            found = {m.group(1): None for m in compiled.finditer(text, timeout=PATTERN_SECONDS)}  # distinct, in order
        except TimeoutError:
            raise TaskDataError(f"{place}: label_pattern {pattern!r} ran for over {PATTERN_SECONDS:g} s on this "
                                f"{len(text)}-character label: a pattern that backtracks without end (a repeated "
                                "group inside a repeat, as (a+)+)?") from None
        if not found:
            raise TaskDataError(f"{place}: label {text!r} has no match of label_pattern {pattern!r}")
        labels.append(next(iter(found)))
        disagree[i] = len(found) > 1
    return labels, disagree


def _wild_type(spec: TaskSpec, root: Path) -> str | None:
    """The wild type a variant_effect spec gives (inline, or its FASTA file's one record); None otherwise."""
    given = spec.wild_type
    if given is None or given == "consensus":
        return None
    if isinstance(given, str):
        return _clean_sequences(spec, [given], [f"{spec.source}: wild_type"])[0]
    try:
        path = resolve(root, given.file)
    except DataPathError as exc:
        raise TaskDataError(f"{spec.source}: wild_type.file: {exc}") from None
    records = list(fasta_entries(path, spec.max_residues))
    if len(records) != 1:
        raise TaskDataError(f"{spec.source}: wild_type.file: {path} holds {len(records)} FASTA records, "
                            "not the one wild type")
    _, body, line = records[0]
    first = body[0][0] if body else line  # exact line:column for a one-line sequence
    return _clean_sequences(spec, ["".join(text for _, text in body)], [f"{path}:{first}"])[0]


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
        if len(cleaned) > spec.max_residues:
            raise TaskDataError(f"{place}: a sequence of more than {spec.max_residues:,} residues, {WHY_LIMIT}")
        out.append(cleaned)
    return out


def _number(text: str, place: str, name: str) -> float:
    """A finite number (a missing per-residue value is the spec's ``missing``, never NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise TaskDataError(f"{place}: {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TaskDataError(f"{place}: {name} {text.strip()!r} is not a finite number")
    return value


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
