"""Task specs: parsing errors that name file/line/key, table formats, splits, subsampling, the shipped specs."""
from __future__ import annotations

import gzip
import textwrap

import numpy as np
import pytest
import yaml

from protjepa.evaluation.tables import TaskDataError
from protjepa.evaluation.task_data import LEFT_OUT, TEST, TRAIN, extract_labels, load_task
from protjepa.evaluation.tasks import Caps, TaskRegistry, TaskSpecError, load_spec, parse_spec, task_registry

GOOD = """\
name: toy
description: a toy regression
type: regression
metric: spearman
fields: {sequence: seq, label: y}
train: train.csv
test: test.csv
"""


def _spec_file(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("type: regression", "type: regresion"),
     r"spec.yaml:3: type: expected regression\|binary\|multiclass"),
    (GOOD.replace("metric: spearman", "metric: auc"), r"spec.yaml:4: metric: regression reports spearman\|pearson"),
    (GOOD + "colour: red\n", r"spec.yaml:8: colour: unknown key"),
    (GOOD.replace("train: train.csv\ntest: test.csv\n", "data: d.csv\nsplit:\n  rule: column\n  train: a\n  test: b\n"),
     r"spec.yaml:8: split.field: required key missing"),
    (GOOD.replace("train: train.csv\ntest: test.csv\n", "data: d.csv\nsplit: {rule: random}\n"),
     r"spec.yaml:7: split"),
    (GOOD.replace("label: y", "target: y"), r"spec.yaml:6: train: no table maps the field 'label'"),
    (GOOD.replace("test: test.csv\n", ""), r"spec.yaml:1: data: give either data"),
    (GOOD.replace("train: train.csv", "train: train.xlsx"),
     r"spec.yaml:6: train\[0\]: cannot tell the format of .train.xlsx."),
    (GOOD + "fast: {records: 10}\n", r"spec.yaml:8: fast.records: rule files caps train and test"),
    (GOOD.replace("regression", "binary").replace("spearman", "auc"), r"spec.yaml:1: positive: a binary task names"),
    (GOOD + "label_pattern: '(\\d)(\\d)'\n", r"spec.yaml:8: label_pattern: needs exactly one group \(the label\), has 2"),
    (GOOD + "label_pattern: '(\\d'\n", r"spec.yaml:8: label_pattern: not a regular expression: missing \)"),
    (GOOD.replace("type: regression\nmetric: spearman", "type: per_residue_regression\nmetric: spearman\nseparator: ','")
     + "label_pattern: '(.)'\n", r"spec.yaml:9: label_pattern: a label pattern derives one label per sequence"),
    (GOOD.replace("type: regression", "type: variant_effect").replace("train: train.csv\ntest: test.csv\n",
     "data: d.csv\nsplit: {rule: all}\nwild_type: {fasta: wt.fa}\n"), r"spec.yaml:8: wild_type.file: required key missing"),
    (GOOD.replace("type: regression", "type: variant_effect").replace("train: train.csv\ntest: test.csv\n",
     "data: d.csv\nsplit: {rule: all}\n"), r"spec.yaml:1: wild_type: give the wild-type sequence, 'consensus' or"),
])
def test_spec_errors_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(TaskSpecError, match=message):
        load_spec(_spec_file(tmp_path, text))


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(TaskSpecError, match=r"spec.yaml:3: malformed YAML"):
        load_spec(_spec_file(tmp_path, "name: x\ntype: [\n  - a: b: c\n"))


def test_registry_refuses_duplicates_and_unknown_names(tmp_path):
    registry = TaskRegistry()
    registry.load(_spec_file(tmp_path, GOOD))
    with pytest.raises(TaskSpecError, match=r"task 'toy' is already defined in .*spec.yaml"):
        registry.load(tmp_path / "spec.yaml")
    with pytest.raises(TaskSpecError, match=r"unknown task 'nope' \(known: toy\)"):
        registry.get("nope")


def _write(path, text: str, gz: bool = False):
    data = textwrap.dedent(text).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_csv_tables_labels_and_data_errors(tmp_path):
    _write(tmp_path / "train.csv", "seq,y\nMKV,1.5\nacdE,-2\n", gz=True)  # gzip told by its bytes, not its name
    _write(tmp_path / "test.csv", "seq,y\nWWW,0\n")
    spec = parse_spec(yaml.safe_load(GOOD))
    data = load_task(spec, tmp_path)
    assert data.sequences == ["MKV", "ACDE", "WWW"] and data.targets == [1.5, -2.0, 0.0]
    assert data.part.tolist() == [TRAIN, TRAIN, TEST]
    assert data.where[1].endswith("train.csv:3")
    _write(tmp_path / "test.csv", "seq,y\nWWW,high\n")
    with pytest.raises(TaskDataError, match=r"test.csv:2: label 'high' is not a number"):
        load_task(spec, tmp_path)
    _write(tmp_path / "test.csv", "seq,y\nWJW,1\n")
    with pytest.raises(TaskDataError, match=r"test.csv:2:2: unknown residue letter 'J'"):
        load_task(spec, tmp_path)
    _write(tmp_path / "test.csv", "sequence,y\nWWW,1\n")
    with pytest.raises(TaskDataError, match=r"test.csv: no column 'seq' for field 'sequence' \(columns: sequence, y\)"):
        load_task(spec, tmp_path)


def test_joined_fasta_tables_header_fields_and_residue_masks(tmp_path):
    _write(tmp_path / "seqs.fa", ">p1 some protein\nMKV\nLA\n>p2 another\nGGHE\n")
    _write(tmp_path / "labels.fa", ">p2 SET=test extra\nHHEC\n>p1 SET=train\nHHCCE\n")
    _write(tmp_path / "mask.tsv", "p1\t11011\np2\t1111\n")
    spec = parse_spec({
        "name": "ss", "description": "d", "type": "per_residue_classification", "metric": "accuracy",
        "classes": ["H", "E", "C"],
        "data": [{"file": "seqs.fa", "fields": {"id": "id", "sequence": "body", "what": "word2"}},
                 {"file": "labels.fa", "fields": {"id": "id", "label": "body", "set": "SET"}},
                 {"file": "mask.tsv", "header": False, "fields": {"id": "col1", "mask": "col2"}}],
        "split": {"rule": "column", "field": "set", "train": "train", "test": "test"},
    })
    data = load_task(spec, tmp_path)
    assert data.sequences == ["MKVLA", "GGHE"] and data.part.tolist() == [TRAIN, TEST]
    assert data.targets[0].tolist() == [0, 0, -1, 2, 1]  # H H (masked) C E
    assert data.targets[1].tolist() == [0, 0, 1, 2]
    _write(tmp_path / "labels.fa", ">p1 SET=train\nHHCCE\n")
    with pytest.raises(TaskDataError, match=r"labels.fa: no record with id 'p2' \(from .*seqs.fa:4\)"):
        load_task(spec, tmp_path)
    _write(tmp_path / "labels.fa", ">p1 SET=train\nHHCXE\n>p2 SET=test\nHHEC\n")
    with pytest.raises(TaskDataError, match=r"labels.fa:1: label letter 'X' is not in classes HEC"):
        load_task(spec, tmp_path)


EC_FIRST_DIGIT = r"(?:^|;)(\d+)\."


def test_label_pattern_extracts_agreeing_matches_and_drops_the_rest(tmp_path):
    labels, disagree = extract_labels(EC_FIRST_DIGIT, ["3.5.2.6", "2.7.7.18;3.6.1.41", "4.2.3.104;4.2.3.57",
                                                       "10.1.1.1", "1.1.1.1;1.2.3.4;2.1.1.1"], ["row"] * 5)
    assert labels == ["3", "2", "4", "10", "1"] and disagree.tolist() == [False, True, False, False, True]
    _write(tmp_path / "train.tsv", "Entry\tEC number\tSequence\na\t3.5.2.6\tMKV\nb\t2.7.7.18;3.6.1.41\tGGH\n"
                                   "c\t4.2.3.104;4.2.3.57\tWWA\n")
    _write(tmp_path / "test.tsv", "Entry\tEC number\tSequence\nd\t1.1.1.1;2.1.1.1\tAAA\ne\t3.1.1.1\tCCC\n")
    spec = parse_spec({"name": "ec", "description": "d", "type": "multiclass", "metric": "accuracy",
                       "fields": {"sequence": "Sequence", "label": "EC number"}, "label_pattern": EC_FIRST_DIGIT,
                       "train": "train.tsv", "test": "test.tsv"})
    data = load_task(spec, tmp_path)
    assert data.part.tolist() == [TRAIN, LEFT_OUT, TRAIN, LEFT_OUT, TEST]
    kept = data.part >= 0
    assert [t for t, k in zip(data.targets, kept) if k] == ["3", "4", "3"]
    assert data.notes == ["dropped records whose label_pattern matches disagree: 1 train, 1 test"]
    _write(tmp_path / "test.tsv", "Entry\tEC number\tSequence\nd\tn/a\tAAA\n")
    with pytest.raises(TaskDataError, match=r"test.tsv:2: label 'n/a' has no match of label_pattern"):
        load_task(spec, tmp_path)


def test_wild_type_from_a_fasta_file_and_its_one_line_errors(tmp_path):
    _write(tmp_path / "v.csv", "seq,y\nMKWA,1\nMRVA,2\n")
    spec = parse_spec({"name": "v", "description": "d", "type": "variant_effect", "metric": "spearman",
                       "fields": {"sequence": "seq", "label": "y"}, "data": "v.csv", "split": {"rule": "all"},
                       "wild_type": {"file": "wt/wt.fa.gz"}})
    (tmp_path / "wt").mkdir()
    _write(tmp_path / "wt" / "wt.fa.gz", ">wt the wild type\nmk\nVA\n", gz=True)
    assert load_task(spec, tmp_path).wild_type == "MKVA"
    inline = parse_spec({**spec.model_dump(exclude_none=True), "wild_type": "mkva"})
    assert load_task(inline, tmp_path).wild_type == "MKVA"
    consensus = parse_spec({**spec.model_dump(exclude_none=True), "wild_type": "consensus"})
    assert load_task(consensus, tmp_path).wild_type is None  # the evaluator derives it from the variants
    for text, message in (
        (">wt\nMKVA\n>other\nMKVA\n", r"<spec>: wild_type.file: .*wt.fa.gz holds 2 FASTA records, not the one wild"),
        ("", r"<spec>: wild_type.file: .*wt.fa.gz holds 0 FASTA records"),
        (">wt\n", r"wt.fa.gz:1: empty sequence"),
        (">wt\nMKJA\n", r"wt.fa.gz:2:3: unknown residue letter 'J'"),
    ):
        _write(tmp_path / "wt" / "wt.fa.gz", text)
        with pytest.raises(TaskDataError, match=message):
            load_task(spec, tmp_path)
    (tmp_path / "wt" / "wt.fa.gz").unlink()
    with pytest.raises(TaskDataError, match=r"^<spec>: wild_type.file: .*wt.fa.gz: no such data file"):
        load_task(spec, tmp_path)


def _regression_on(tmp_path, n: int, split: dict, fast: dict | None = None):
    rows = "".join(f"{'ACDEFGHIKLMNPQRSTVWY'[i % 20] * (1 + i % 7)}{'W' * (i // 20)},{i}\n" for i in range(n))
    _write(tmp_path / "d.csv", "seq,y\n" + rows)
    raw = {"name": "r", "description": "d", "type": "regression", "metric": "spearman",
           "fields": {"sequence": "seq", "label": "y"}, "data": "d.csv", "split": split}
    return parse_spec({**raw, "fast": fast} if fast else raw)


def test_hash_split_and_folds_are_deterministic_and_keep_duplicates_together(tmp_path):
    spec = _regression_on(tmp_path, 400, {"rule": "hash", "test_fraction": 0.25})
    data = load_task(spec, tmp_path)
    assert 0.18 < (data.part == TEST).mean() < 0.32
    assert load_task(spec, tmp_path).part.tolist() == data.part.tolist()
    by_sequence = {}
    for sequence, part in zip(data.sequences, data.part):
        assert by_sequence.setdefault(sequence, part) == part
    assert "test = 25% of records by a hash of the sequence" in data.notes[-1]
    cv = load_task(_regression_on(tmp_path, 400, {"rule": "cross_validation", "folds": 4}), tmp_path)
    folds = cv.folds()
    assert len(folds) == 4 and sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(400))
    assert all(not set(train) & set(test) for train, test in folds)


def test_subsample_is_deterministic_capped_and_said(tmp_path):
    spec = _regression_on(tmp_path, 300, {"rule": "hash", "test_fraction": 0.5}, fast={"train": 20, "test": 30})
    data = load_task(spec, tmp_path)
    before = data.part.copy()
    data.subsample(spec.fast, seed=0)
    assert data.count(TRAIN) == 20 and data.count(TEST) == 30
    assert set(np.flatnonzero(data.part == TRAIN)) <= set(np.flatnonzero(before == TRAIN))
    assert any(n.startswith("train subsampled to 20 of") for n in data.notes)
    again = load_task(spec, tmp_path)
    again.subsample(spec.fast, seed=0)
    assert again.part.tolist() == data.part.tolist()
    other = load_task(spec, tmp_path)
    other.subsample(Caps(train=20), seed=1)
    assert other.part.tolist() != data.part.tolist() and (other.part == LEFT_OUT).sum() == before.tolist().count(0) - 20


# (task, {part: records}) as SOURCE.md counts them
SHIPPED = {
    "stability": {"train": 53614, "test": 12851},
    "remote_homology": {"train": 12312, "test": 718},
    "gb1_three_vs_rest": {"train": 2990, "test": 5743},
    "gb1_two_vs_rest": {"train": 424, "test": 8309},
    "gb1_one_vs_rest": {"train": 28, "test": 8705},
    "gb1_low_vs_high": {"train": 5089, "test": 3644},
    "gb1_zero_shot": {"records": 8733},
    "ss3_cb513": {"train": 2170, "test": 513},
    "ss3_netsurfp": {"train": 9712 + 1080, "test": 364},
    "disorder_chezod": {"train": 1325 - 85, "test": 85},
    "disorder_netsurfp": {"train": 2170, "test": 513},
    "solubility": {"train": 6942, "test": 2001},
    "fluorescence": {"records": 5362},
    "fluorescence_zero_shot": {"records": 5362},
    "scope40": {"records": 12119},
    "beta_lactamase": {"train": 4019, "test": 977},  # 4,996 variants, 20% by a hash of the sequence
    "beta_lactamase_zero_shot": {"records": 4996},
    "ec_class_new392": {"train": 7585, "test": 388},  # records with one first EC digit
    "ec_class_price149": {"train": 7585, "test": 149},
}
# first EC digit -> test records, counted from the TSV files apart from protjepa
EC_TEST_CLASSES = {
    "ec_class_new392": {"1": 86, "2": 110, "3": 85, "4": 89, "5": 8, "6": 6, "7": 4},
    "ec_class_price149": {"1": 58, "2": 29, "3": 21, "4": 24, "5": 9, "6": 8},
}


def test_every_shipped_spec_is_listed_here():
    assert set(task_registry().names()) == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_spec_loads_the_real_data(data_root, name):
    spec = task_registry().get(name)
    data = load_task(spec, data_root)
    counts = {"records": int((data.part >= 0).sum())} if spec.rule in ("all", "cross_validation") else \
        {"train": data.count(TRAIN), "test": data.count(TEST)}
    assert counts == SHIPPED[name]
    if spec.type == "per_residue_classification":
        labelled = np.concatenate(data.targets[:50])
        assert set(np.unique(labelled)) <= set(range(-1, len(spec.classes)))
    if name == "disorder_chezod":  # 999 = no value
        assert np.isnan(np.concatenate(data.targets)).mean() > 0.05
    if name == "scope40":
        assert data.targets[0] == "a.1.1.1" and data.sequences[0].startswith("SLFEQLGGQAAVQ")
    if name in EC_TEST_CLASSES:
        test_labels = [t for t, p in zip(data.targets, data.part) if p == TEST]
        assert {c: test_labels.count(c) for c in sorted(set(test_labels))} == EC_TEST_CLASSES[name]
        assert "dropped records whose label_pattern matches disagree: 172 train" in data.notes[-1]
    if name == "beta_lactamase_zero_shot":  # every variant one substitution away from the FASTA's wild type
        assert len(data.wild_type) == 263 and data.wild_type.startswith("HPETLVKVKDAEDQ")
        assert {sum(a != b for a, b in zip(s, data.wild_type)) for s in data.sequences} == {1}
    if spec.fast != Caps():
        data.subsample(spec.fast)
        assert any("subsampled" in note for note in data.notes) or name == "gb1_one_vs_rest"


def test_default_suite_leaves_out_the_extra_gb1_splits():
    names = [s.name for s in task_registry().select()]
    assert names == sorted(set(SHIPPED) - {"gb1_low_vs_high", "gb1_one_vs_rest", "gb1_two_vs_rest"})
    assert len(names) == 16 and "beta_lactamase_zero_shot" in names and "ec_class_price149" in names
    assert len(task_registry().select(["all"])) == len(SHIPPED)


def test_exact_leakage_matches_the_documented_overlaps(data_root):
    """../shared/data/README.md: 163 of 12,119 SCOPe domains, 11 of 718 remote-homology test,
    113 of 2,001 DeepSol test occur verbatim in the pretraining corpus."""
    from protjepa.evaluation.leakage import Corpus

    folder = data_root / "pretrain_swissprot50"
    corpus = Corpus([folder / "swissprot2014_50_train.fasta.gz", folder / "swissprot2014_50_valid.fasta.gz"])
    registry = task_registry()
    # EC (ec_clean/SOURCE.md counts 5,487 and 62 against the train file alone; the valid file adds 207 and 4)
    for name, part, expected in (("scope40", 0, 163), ("remote_homology", TEST, 11), ("solubility", TEST, 113),
                                 ("ec_class_new392", TRAIN, 5694), ("ec_class_new392", TEST, 66),
                                 ("ec_class_price149", TEST, 2)):
        data = load_task(registry.get(name), data_root)
        assert int((corpus.exact(data.sequences) & (data.part == part)).sum()) == expected, name
