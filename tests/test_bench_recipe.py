"""``protjepa bench --recipe``: any recipe's training step timed as the suite's step rows are, with its model
FLOPs per step (the count ``protjepa train`` uses for the same recipe and batch) and MFU. Two recipes a user
writes: a ``_component_`` encoder (tests/toy_model.py's SmallTransformer, counted by FlopCounterMode) and the
data2vec plugin objective of docs/extending.md composed with MLM, at tiny sizes on the CPU."""
from __future__ import annotations

import contextlib
import importlib
import io
import json

import pytest
import torch
import yaml

from protjepa import precision
from protjepa.bench.config import BenchConfig
from protjepa.bench.recipes import run_recipes
from protjepa.cli import main
from protjepa.objectives.base import Objective
from protjepa.training.summary import read_records
from test_latent_plugin import lab  # noqa: F401 - the docs' data2vec plugin, importable as d2v_lab.data2vec

DATA = {"crop": 64, "batch_tokens": 512, "shuffle_buffer": 64}
TRAIN = {"device": "cpu", "threads": 1, "log_every": 1, "monitor_every": 1, "monitor_sequences": 4,
         "checkpoint_at": [1.0]}
RECIPES = {
    "component.yaml": {"name": "small_component", "encoder": {"_component_": "toy_model.SmallTransformer"},
                       "objectives": [{"name": "mlm"}], "data": DATA, "budget": {"steps": 1}, "train": TRAIN},
    "plugin.yaml": {"name": "mlm_data2vec", "plugins": ["d2v_lab.data2vec"],
                    "encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
                    "objectives": [{"name": "mlm"}, {"name": "data2vec", "weight": 0.5}],
                    "data": {**DATA, "packing": True}, "budget": {"steps": 1}, "train": TRAIN},
}
NAMES = ["small_component", "mlm_data2vec"]
LAYOUTS = {"small_component": "padded:1", "mlm_data2vec": "packed:2"}  # each recipe's own batches
NATIVE_BF16 = precision.cpu_bf16_missing() is None
KINDS = ["", "+bf16", "+compile"] if NATIVE_BF16 else ["", "+compile"]
LABELS = {"+bf16": "bf16 / fp32", "+compile": "compile / eager"}  # each against the recipe's own step


def write_recipes(folder) -> list[str]:
    for file, recipe in RECIPES.items():
        (folder / file).write_text(yaml.safe_dump(recipe, sort_keys=False))
    return [str(folder / file) for file in RECIPES]


@pytest.fixture(scope="module")
def benched(lab, data_root, tmp_path_factory):  # noqa: F811 - the imported fixture
    """Both recipes benched in one run, one repetition of one step (so a row's FLOPs per step are those of its
    first batch), --compile with aot_eager (what is compiled, not how fast, is checked); stdout and the JSON."""
    folder = tmp_path_factory.mktemp("bench_recipe")
    files = write_recipes(folder)
    compile_calls = []
    compile_model = torch.compile

    def aot_eager(model, **options):
        compile_calls.append(options)
        return compile_model(model, backend="aot_eager", **options)

    out, printed = folder / "bench.json", io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(torch, "compile", aot_eager)
        code = main(["bench", "--recipe", files[0], "--recipe", files[1], "--repeats", "1", "--steps", "1",
                     "--warmup", "1", "--threads", "1", "--compile", "--data-root", str(data_root), "--json", str(out)])
    assert code == 0
    return files, json.loads(out.read_text()), printed.getvalue(), compile_calls


def test_the_json_carries_every_recipes_rows_and_ratios_against_the_first(benched):
    files, result, printed, compile_calls = benched
    (run,) = result["runs"]
    rows = {r["name"]: r for r in run["rows"]}
    assert list(rows) == [f"{name}{kind}" for name in NAMES for kind in KINDS]
    for name in NAMES:
        for kind in KINDS:
            row = rows[f"{name}{kind}"]
            assert row["layout"] == LAYOUTS[name] and row["tokens_per_s"] > 0 and row["tokens_per_step"] > 0
            # MFU against this CPU's matrix products measured at the recipe's shapes, in the row's precision
            assert row["mfu"] == pytest.approx(row["tflops"] * 1e12 / run["recipes"][NAMES.index(name)]["peaks"][
                "bf16" if kind == "+bf16" else "fp32"])
            assert row["flops_per_step"] == rows[name]["flops_per_step"]  # the same batch, the same count
    assert compile_calls == [{}, {}]  # each compiled as training compiles it (padded and packed rows: no options)
    component, plugin = run["recipes"]
    assert component["name"] == "small_component" and component["file"] == files[0]
    assert component["flops"].startswith("model FLOPs of ModuleAdapter: it declares no count; counted by torch's "
                                         "FlopCounterMode")
    assert component["batches"] == "padded rows, crop 64, 512 tokens a batch (the recipe's data and masking)"
    assert plugin["objectives"] == "mlm x 1, data2vec x 0.5"
    assert plugin["flops"] == "model FLOPs: as the encoder and objectives declare them"
    assert plugin["batches"].startswith("packed rows, crop 64, 512 tokens")
    ratios = {q["name"]: q for q in run["ratios"]}
    assert list(ratios) == [f"mlm_data2vec{kind} / small_component{kind}" for kind in KINDS] + [
        f"{name} {LABELS[kind]}" for name in NAMES for kind in KINDS[1:]]
    assert all(q["value"] > 0 for q in ratios.values())
    assert run["config"]["files"] == files and run["config"]["repeats"] == 1 and run["config"]["compile"]
    assert "== recipes, cpu fp32, 1 repetitions x 1 steps" in printed and "mlm_data2vec / small_component" in printed


def test_the_flops_per_step_are_the_count_train_uses_for_the_same_recipe_and_batch(benched, data_root, tmp_path):
    """``protjepa train`` of each recipe for one step logs the model FLOPs its budget counts; the bench's row
    timed the same first batch of the same corpus and reports the same number, in the JSON and the table."""
    files, result, printed, _ = benched
    rows = {r["name"]: r for r in result["runs"][0]["rows"]}
    for name, file in zip(NAMES, files):
        assert main(["train", file, "--run-dir", str(tmp_path / name), "--data-root", str(data_root)]) == 0
        (first, *_) = [r for r in read_records(tmp_path / name / "metrics.jsonl") if r["kind"] == "train"]
        assert first["step"] == 1 and first["flops"] > 0
        assert rows[name]["flops_per_step"] == first["flops"]
        (line,) = [line for line in printed.splitlines() if line.split()[:2] == [name, LAYOUTS[name]]]
        assert f"{first['flops']:10.4g}" in line


def test_an_uncounted_plugin_leaves_its_rows_without_flops(lab, data_root, tmp_path, monkeypatch):  # noqa: F811
    (_, plugin) = write_recipes(tmp_path)
    data2vec = importlib.import_module("d2v_lab.data2vec").Data2Vec
    monkeypatch.setattr(data2vec, "flops", Objective.flops)  # a plugin that declares no count: the default
    result = run_recipes([plugin], [], BenchConfig(repeats=1, bf16_rows=False, data_root=str(data_root)))
    (row,) = result.rows
    assert row.tokens_per_s > 0 and row.flops_per_step is None and row.tflops is None and row.mfu is None
    assert result.recipes[0].flops == ("model FLOPs not counted: no count declared by objective data2vec (its rows: "
                                       "no FLOP/step, TFLOP/s or MFU)")


@pytest.mark.parametrize("args, error", [
    (["--recipe", "no_such_recipe.yaml"], "no_such_recipe.yaml: no such recipe file"),
    (["--recipe", "{good}", "--recipe", "{bad}"], "{bad}:4: data.crop: Input should be greater than or equal to 8"),
    (["--recipe", "{good}", "--set", "data.crop=4"], "{good}: --set data.crop: data.crop: Input should be greater "
                                                     "than or equal to 8"),  # as train's --set says it
    (["--recipe", "{fill}"], "{fill}:4: data.batch_tokens: fill sizes the step to a GPU's memory, and this run is on "
                             "the CPU: give a number, e.g. --set data.batch_tokens=8192"),
    (["--recipe", "{good}", "--crop", "128"], "--recipe: --crop sets the suite's rows; a recipe's rows train the "
                                              "recipe as written (change it with --set, e.g. --set data.crop=128)"),
    (["--set", "data.crop=128"], "--set changes the recipes given with --recipe; the suite's settings are flags "
                                 "(protjepa bench --help)"),
])
def test_bad_recipes_and_flags_are_one_line_errors_before_anything_is_built(tmp_path, capsys, args, error):
    files = write_recipes(tmp_path)
    good = files[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nencoder: {name: esm2, num_layers: 2, embed_dim: 32, attention_heads: 4}\n"
                   "objectives: [{name: mlm}]\ndata: {crop: 4}\n")
    fill = tmp_path / "fill.yaml"
    fill.write_text(bad.read_text().replace("data: {crop: 4}", "data: {batch_tokens: fill}"))
    args = [a.format(good=good, bad=bad, fill=fill) for a in args]
    assert main(["bench", *args, "--json", str(tmp_path / "bench.json")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"protjepa: error: {error.format(good=good, bad=bad, fill=fill)}\n"
    assert "building" not in captured.err and not (tmp_path / "bench.json").exists()
