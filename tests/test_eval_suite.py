"""The suite end to end on small generated tasks of every type, and the probe / compare commands."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from protjepa.cli import main
from protjepa.encoders.weights import export_hf
from protjepa.encoders.esm2 import ESM2
from protjepa.evaluation.embed import Embedder
from protjepa.evaluation.examples import EXAMPLES_FILE, read_examples
from protjepa.evaluation.suite import SuiteSettings, run_probe_suite, write_results
from protjepa.evaluation.tasks import TaskRegistry
from test_eval_embed import OneHotWindow

LETTERS = "ACDEFGHIKLMNPQRSTVWY"
HYDROPHOBIC = set("AILMFVW")


def _sequence(rng, favour: str = "", length: int | None = None) -> str:
    weights = np.ones(20)
    for letter in favour:
        weights[LETTERS.index(letter)] += 6
    n = length or int(rng.integers(20, 45))
    return "".join(rng.choice(list(LETTERS), size=n, p=weights / weights.sum()))


def _task(folder, name: str, **spec) -> None:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "description": name, **spec}))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A data root and a spec folder with one small task of each type (labels a composition encoder can read)."""
    root, specs = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("specs")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(90):
        s = _sequence(rng, favour="A" * (i % 4) + "W" * (i % 3 == 0) + "GL"[i % 2])
        rows.append((s, s.count("A") / len(s), int(s.count("W") / len(s) > 0.1), max("AGL", key=s.count)))
    (root / "seq.csv").write_text("seq,frac_a,many_w,top\n" + "".join(f"{s},{a},{w},{t}\n" for s, a, w, t in rows))
    residue_rows = []
    for _ in range(40):
        s = _sequence(rng)
        labels = "".join("1" if c in HYDROPHOBIC else "0" for c in s)
        values = ",".join("999" if k % 7 == 0 else str(LETTERS.index(c)) for k, c in enumerate(s))
        residue_rows.append(f"{s}\t{labels}\t{values}\n")
    (root / "residues.tsv").write_text("seq\tlabels\tvalues\n" + "".join(residue_rows))
    with open(root / "domains.fa", "w") as fasta:
        for i in range(48):
            family = i % 6
            sequence = _sequence(rng, favour=LETTERS[family * 3:family * 3 + 3])  # families differ in composition
            fasta.write(f">d{i} a.{family // 3}.{family}.{family} a domain\n{sequence}\n")
    wild_type = _sequence(rng, length=30)
    variants = [wild_type[:k] + "W" + wild_type[k + 1:] for k in range(0, 30, 3)]
    (root / "variants.csv").write_text("seq,fitness\n" + "".join(f"{v},{k}\n" for k, v in enumerate(variants)))

    sequence_fields = {"sequence": "seq", "label": "frac_a"}
    _task(specs, "reg", type="regression", metric="spearman", fields=sequence_fields, data="seq.csv",
          split={"rule": "hash", "test_fraction": 0.3})
    _task(specs, "reg_cv", type="regression", metric="spearman", fields=sequence_fields, data="seq.csv",
          split={"rule": "cross_validation", "folds": 3}, fast={"records": 60})
    _task(specs, "bin", type="binary", metric="auc", positive="1", fields={"sequence": "seq", "label": "many_w"},
          data="seq.csv", split={"rule": "hash", "test_fraction": 0.3})
    _task(specs, "multi", type="multiclass", metric="accuracy", fields={"sequence": "seq", "label": "top"},
          data="seq.csv", split={"rule": "hash", "test_fraction": 0.3})
    residue_table = {"file": "residues.tsv"}
    _task(specs, "res_cls", type="per_residue_classification", metric="auc", classes=["0", "1"], positive="1",
          fields={"sequence": "seq", "label": "labels"}, data=residue_table, split={"rule": "hash"})
    _task(specs, "res_reg", type="per_residue_regression", metric="spearman", separator=",", missing=999,
          fields={"sequence": "seq", "label": "values"}, data=residue_table, split={"rule": "hash"})
    _task(specs, "retrieval", type="retrieval", metric="family_recall@1", ks=[1, 5],
          fields={"id": "id", "sequence": "body", "label": "word2"}, data="domains.fa", split={"rule": "all"})
    _task(specs, "variants", type="variant_effect", metric="spearman", wild_type=wild_type,
          fields={"sequence": "seq", "label": "fitness"}, data="variants.csv", split={"rule": "all"})
    return root, specs


def test_suite_scores_every_task_type_and_writes_results(tiny, tmp_path):
    root, specs = tiny
    registry = TaskRegistry()
    registry.load(specs)
    embedder = Embedder(OneHotWindow(0), cache_dir=tmp_path / "cache", progress=False)
    lines = []
    results, examples = run_probe_suite(registry.select(), embedder, root, SuiteSettings(fast=True), log=lines.append)
    tasks = results["tasks"]
    assert tasks["reg"]["value"] > 0.95 and tasks["reg_cv"]["value"] > 0.95  # label = a composition entry
    assert tasks["reg_cv"]["n_test"] == 60
    assert "records subsampled to 60 of 90 (deterministic, seed 0)" in tasks["reg_cv"]["notes"]
    assert tasks["bin"]["value"] > 0.9 and tasks["multi"]["value"] > 0.8
    assert tasks["res_cls"]["value"] > 0.99 and tasks["res_reg"]["value"] > 0.99  # labels are residue identities
    assert tasks["retrieval"]["value"] > 0.8 and set(tasks["retrieval"]["metrics"]) == {
        f"{level}_recall@{k}" for level in ("family", "superfamily", "fold") for k in (1, 5)}
    assert tasks["variants"]["value"] is None and "no LM head" in tasks["variants"]["error"]
    assert "[8/8] variants (variant_effect, spearman)" in lines and any("skipped" in line for line in lines)
    json_path, md_path = write_results(results, tmp_path / "out", examples)
    assert json.loads(json_path.read_text())["tasks"]["reg"]["value"] == pytest.approx(tasks["reg"]["value"])
    assert "| reg | regression | spearman |" in md_path.read_text()
    # each task's scored examples, read back from examples.npz, give its main metric again
    recorded = {t: r["examples"] for t, r in json.loads(json_path.read_text())["tasks"].items() if "examples" in r}
    stored = read_examples(tmp_path / "out" / EXAMPLES_FILE, recorded)
    assert set(stored) == set(tasks) - {"variants"}  # the variant task failed: no examples
    assert {t: e.kind for t, e in stored.items()} == {"reg": "spearman", "reg_cv": "spearman", "bin": "auc",
                                                      "multi": "mean", "res_cls": "auc", "res_reg": "spearman",
                                                      "retrieval": "mean"}
    for task, scored in stored.items():
        assert scored.metric == pytest.approx(tasks[task]["value"], abs=1e-12), task
    assert len(stored["reg_cv"].sizes) == 60 and (stored["reg_cv"].sizes == 1).all()
    assert stored["res_cls"].sizes.sum() == len(stored["res_cls"].output) > len(stored["res_cls"].sizes)
    assert "Leakage was not checked" in md_path.read_text()
    hits = embedder.cache_hits
    run_probe_suite(registry.select(["reg"]), embedder, root, SuiteSettings(fast=True), log=lines.append)
    assert embedder.cache_hits == hits + 1


def _run_dir(path, root, seed: int):
    torch.manual_seed(seed)
    export_hf(ESM2(2, 32, 4), path / "export")
    recipe = {"name": path.name, "data": {"train": "corpus.fa", "valid": None}}
    (path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return path


def test_probe_and_compare_commands(tiny, tmp_path, capsys):
    root, specs = tiny
    first_sequence = (root / "seq.csv").read_text().splitlines()[1].split(",")[0]
    (root / "corpus.fa").write_text(f">leak\n{first_sequence}\n")
    args = ["--spec", str(specs), "--tasks", "reg,variants", "--data-root", str(root),
            "--cache-dir", str(tmp_path / "cache")]
    run_a, run_b = _run_dir(tmp_path / "run_a", root, 0), _run_dir(tmp_path / "run_b", root, 1)
    assert main(["probe", str(run_a), *args]) == 0
    out = capsys.readouterr().out
    assert "[2/2] variants (variant_effect, spearman)" in out and "leakage against 1 corpus file" in out
    results = json.loads((run_a / "probe" / "results.json").read_text())
    assert results["checkpoint"] == str(run_a / "export")
    leaked = results["tasks"]["reg"]["leakage"]["exact"]
    assert sum(leaked.values()) == 1  # the corpus holds one probe sequence
    variants = results["tasks"]["variants"]
    assert variants["metric"] == "spearman" and math.isfinite(variants["value"]) and -1 <= variants["value"] <= 1
    threads = torch.get_num_threads()
    try:
        assert main(["probe", str(run_b), *args, "--drop-leaked", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2  # as a recipe's train.threads sets them for training
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()

    assert main(["compare", str(run_a), str(run_b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| reg | spearman |" in out and "one-sided sign test" in out
    assert "warning: probed with different drop_leaked: False (run_a) vs True (run_b)" in out
    assert (tmp_path / "cmp" / "compare.md").read_text() in out
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def test_probe_command_errors_are_one_line(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"protjepa: error: {tmp_path / 'missing'}: no such checkpoint file or directory"
    with pytest.raises(SystemExit) as exit_code:
        main(["probe", str(tmp_path), "--threads", "0"])
    assert exit_code.value.code == 2 and capsys.readouterr().err.startswith("protjepa probe: error: argument --threads")
    assert main(["probe", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "stability" in listing and "(not default)" in listing


def test_beta_lactamase_and_ec_tasks_end_to_end_on_the_real_files(data_root, tmp_path):
    """The four shipped tasks on their real files, a tiny random ESM-2 at small caps: finite scores,
    and the leakage of the corpus (three split10 and one New-392 sequence) counted in the results."""
    from protjepa.evaluation.leakage import Corpus
    from protjepa.evaluation.task_data import TEST, TRAIN, load_task
    from protjepa.evaluation.tasks import task_registry

    registry = task_registry()
    names = ["beta_lactamase", "beta_lactamase_zero_shot", "ec_class_new392", "ec_class_price149"]
    ec = load_task(registry.get("ec_class_new392"), data_root)
    leaked = [s for s, p in zip(ec.sequences, ec.part) if p == TRAIN][:3] + \
        [s for s, p in zip(ec.sequences, ec.part) if p == TEST][:1]
    (tmp_path / "corpus.fa").write_text("".join(f">c{i}\n{s}\n" for i, s in enumerate(leaked)))
    embedder = Embedder(ESM2(2, 32, 4), cache_dir=None, progress=False, device="cpu")
    settings = SuiteSettings(max_train=40, max_test=20, max_records=60)
    results, _ = run_probe_suite(registry.select(names), embedder, data_root, settings,
                                 Corpus([tmp_path / "corpus.fa"]), log=lambda line: None)
    tasks = results["tasks"]
    for name in names:
        assert "error" not in tasks[name], tasks[name].get("error")
        assert math.isfinite(tasks[name]["value"]) and all(math.isfinite(v) for v in tasks[name]["metrics"].values())
    assert (tasks["beta_lactamase"]["n_train"], tasks["beta_lactamase"]["n_test"]) == (40, 20)
    assert tasks["beta_lactamase_zero_shot"]["n_test"] == 60
    assert (tasks["ec_class_price149"]["n_train"], tasks["ec_class_price149"]["n_test"]) == (40, 20)
    assert tasks["ec_class_new392"]["leakage"] == {"exact": {"train": 3, "test": 1}}
    assert tasks["ec_class_price149"]["leakage"] == {"exact": {"train": 3, "test": 0}}
    _, md_path = write_results(results, tmp_path / "out")
    assert "- ec_class_new392: in the pretraining corpus (exact: 3 train, 1 test)" in md_path.read_text()
