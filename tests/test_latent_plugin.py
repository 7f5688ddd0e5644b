"""A plugin author's latent objective gets what the built-in JEPA term gets. The plugin is the
data2vec-style objective of docs/extending.md, taken from the page as it is written and imported
through a recipe's ``plugins:``: a one-line error before the first step when it breaks the latent
contract; the run summary's latent line; ``protjepa readout``'s ridge readouts; the experiment
report's learned check and default criteria, beside a JEPA arm of the same experiment."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from protjepa import registry
from protjepa.build import build_model
from protjepa.cli import main
from protjepa.experiment.latent import LEARNED_BY, RunLatent, VariantLatent, criteria
from protjepa.experiment.records import read_done
from protjepa.experiment.report import NOT_LEARNED
from protjepa.experiment.runner import run_experiment
from protjepa.experiment.spec import load_experiment
from protjepa.objectives.base import LatentScore, Objective, ObjectiveError
from protjepa.recipe import parse_recipe
from protjepa.registry import OBJECTIVES, load_plugins
from protjepa.training.summary import format_summary
from test_docs import DOCS, blocks
from test_experiment import _table

MARKER = "# my_lab/data2vec.py\n"
ENCODER = {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4}
TRAIN = {"device": "cpu", "threads": 1, "log_every": 1, "monitor_every": 2, "monitor_sequences": 8,
         "checkpoint_at": [0.5, 1.0]}
DATA = {"crop": 64, "batch_tokens": 512, "shuffle_buffer": 64}


def plugin_source() -> str:
    """The plugin module docs/extending.md shows (the block that starts with its file name)."""
    (source,) = [block for block in blocks(DOCS / "extending.md", "python") if block.startswith(MARKER)]
    return source


def recipe(name: str, *objectives: dict, plugins: tuple[str, ...] = ("d2v_lab.data2vec",)) -> dict:
    return {"name": name, "plugins": list(plugins), "encoder": ENCODER, "data": DATA, "optim": {"warmup": 1},
            "budget": {"steps": 4}, "train": TRAIN, "objectives": [{"name": "mlm"}, *objectives]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A folder on sys.path holding the docs' plugin as ``d2v_lab.data2vec``, and a copy that logs only
    its own loss (``d2v_quiet.data2vec``, objective ``data2vec_quiet``: the issue's objective); the
    registries as they were afterwards (test_docs registers the page's own ``data2vec``)."""
    folder = tmp_path_factory.mktemp("lab")
    source = plugin_source()
    quiet = source.replace('"data2vec"', '"data2vec_quiet"').replace(
        "self.latent_metrics(rows.predictions.detach(), rows.targets)", '{"smooth_l1": loss.detach()}')
    assert quiet.count("data2vec_quiet") == 1 and "smooth_l1" in quiet
    for package, text in (("d2v_lab", source), ("d2v_quiet", quiet)):
        (folder / package).mkdir()
        (folder / package / "__init__.py").write_text("")
        (folder / package / "data2vec.py").write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        load_plugins()
        patch.setattr(OBJECTIVES, "_entries", {k: v for k, v in OBJECTIVES._entries.items() if k != "data2vec"})
        patch.setattr(registry, "_loaded_modules", set())
        patch.syspath_prepend(str(folder))
        yield folder
    for name in [m for m in sys.modules if m.startswith(("d2v_lab", "d2v_quiet"))]:
        del sys.modules[name]


def test_a_plugin_that_logs_no_latent_score_stops_before_the_first_step(lab, data_root, tmp_path, capsys):
    path = tmp_path / "quiet.yaml"
    path.write_text(yaml.safe_dump(recipe("quiet", {"name": "data2vec_quiet", "weight": 0.5},
                                          plugins=("d2v_quiet.data2vec",)), sort_keys=False))
    run_dir = tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run_dir), "--data-root", str(data_root)]) == 2
    assert capsys.readouterr().err == (
        "protjepa: error: objectives: data2vec_quiet (Data2Vec): declares the latent score r2, but logs no "
        "data2vec_quiet/r2 (it logs loss, smooth_l1): add latent_metrics(predictions, targets) to its metrics "
        "(docs/extending.md, 'A latent objective')\n")
    assert not list(run_dir.glob("checkpoints/*.pt")) and not (run_dir / "export").exists()


@pytest.mark.parametrize("attribute, value, missing", [
    ("latent_score", "r2", "latent_score is 'r2', not a LatentScore: declare the metric and the constant it is "
                           "compared to, e.g. LatentScore('lift') or LatentScore('agreement', constant=0.5)"),
    ("latent_rows", Objective.latent_rows, "declares the latent score r2 but no latent_rows(ctx): the student state, "
                                           "predictions and targets readout scores"),
    ("latent_score", LatentScore("agreement", 0.5), "its latent score agreement is none of cosine, cosine_of_mean, "
                                                    "lift, r2 (what the default latent_metrics computes): compute it "
                                                    "in latent_metrics"),
])
def test_an_incomplete_declaration_is_refused_when_the_model_is_built(lab, monkeypatch, attribute, value, missing):
    made = recipe("lab", {"name": "data2vec"})
    data2vec = type(build_model(parse_recipe(made)).objectives[1])
    monkeypatch.setattr(data2vec, attribute, value)
    with pytest.raises(ObjectiveError) as error:
        build_model(parse_recipe(made))
    assert str(error.value) == f"objectives: data2vec (Data2Vec): {missing} (docs/extending.md, 'A latent objective')"


# --------------------------------------------------------------------------- beside JEPA, in one experiment


EXPERIMENT = {
    "name": "latent_plugin", "baseline": "mlm", "seeds": [0], "budget": {"steps": 4},
    "variants": [
        {"recipe": recipe("mlm", plugins=())},
        {"recipe": recipe("jepa", {"name": "jepa", "weight": 0.5, "loss": "mse"}, plugins=())},  # r2, as data2vec
        {"recipe": recipe("data2vec", {"name": "data2vec", "weight": 0.5})},
    ],
    "probe": {"tasks": ["stability"], "check_leakage": False, "max_train": 100, "max_test": 50},
}
LATENT = {"jepa": "jepa", "data2vec": "data2vec"}  # variant -> its latent objective's id


@pytest.fixture(scope="module")
def experiment(lab, data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("latent_plugin")
    (folder / "latent_plugin.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    loaded = load_experiment(folder / "latent_plugin.yaml", output=folder / "out")
    outcome = run_experiment(loaded, data_root=str(data_root), console=False, log=lambda line: None)
    readouts = {variant: json.loads((run_dir(loaded, variant) / "readout.json").read_text())["latent"][id]
                for variant, id in LATENT.items()}  # what the report read (the readout test below rewrites them)
    return loaded, outcome, readouts


def run_dir(experiment, variant: str) -> Path:
    return experiment.output / "runs" / variant / "seed0"


@pytest.mark.parametrize("variant", list(LATENT))
def test_the_summary_sets_the_held_out_score_beside_the_constant(experiment, variant):
    loaded, _, _ = experiment
    summary = read_done(run_dir(loaded, variant))["summary"]
    id = LATENT[variant]
    assert summary["latent_scores"] == {id: {"metric": "r2", "constant": 0.0}}
    end = summary["monitor_end"]
    line = next(line for line in format_summary(summary, Path(".")).splitlines() if "latent term" in line)
    assert line == (f"held-out latent term {id}: r2 {end[f'val/{id}/r2']:+.3f} (cosine {end[f'val/{id}/cosine']:.3f}, "
                    f"the mean target's {end[f'val/{id}/cosine_of_mean']:.3f}, lift {end[f'val/{id}/lift']:+.3f}); "
                    "r2 > 0 beats the constant")


@pytest.mark.parametrize("variant", list(LATENT))
def test_readout_gives_the_ridge_readouts(experiment, variant, data_root, capsys):
    loaded, outcome, _ = experiment
    assert f"{variant}/seed0" in outcome.read_out
    folder, id = run_dir(loaded, variant), LATENT[variant]
    # the plugin arm's recipe names code (plugins:): a run folder is data, read with --trust-code
    assert main(["readout", str(folder), "--sequences", "8", "--data-root", str(data_root), "--trust-code"]) == 0
    held = json.loads((folder / "readout.json").read_text())["latent"][id]
    assert held["metric"] == "r2" and held["constant"] == 0 and held["score"] == held["r2"]
    assert set(held["readout_r2"]) == {"student", "predictions", "residue"}
    assert held["rows"] > 0 and all(value <= 1 for value in held["readout_r2"].values())
    out = capsys.readouterr().out
    assert f"  {id}: r2 {held['r2']:+.4f} (cosine {held['cosine']:.4f}, the mean target's " \
           f"{held['cosine_of_mean']:.4f}, lift {held['lift']:+.4f}) ({held['rows']} rows; r2 > 0 beats the constant)" \
        in out
    assert f"  {id}: ridge readout R² of the target, held-out half: from the student state " \
           f"{held['readout_r2']['student']:.4f}" in out


def test_the_report_checks_that_each_latent_term_learned_and_holds_it_to_the_criteria(experiment):
    _, outcome, readouts = experiment
    report = outcome.report.read_text()
    runs = {row[0]: row for row in _table(report, "## Latent term against a constant")[1:]}
    variants = {row[0]: row for row in _table(report, "Per variant.")}
    verdicts = {row[0]: row for row in _table(report, "## Verdicts")[1:]}
    for variant, id in LATENT.items():
        held = readouts[variant]
        row = runs[f"{variant}/seed0 ({id})"]
        assert row[3] == f"r2 {held['r2']:+.4f}" and row[4] == f"{held['cosine']:.4f} ({held['cosine_of_mean']:.4f})"
        assert row[5] == " / ".join(f"{held['readout_r2'][k]:.4f}" for k in ("student", "predictions", "residue"))
        learned = held["r2"] > 0
        assert variants[variant][4] == f"r2 {held['r2']:+.3f}"
        assert variants[variant][5] == ("yes" if learned else "**no**")
        criteria = variants[variant][6]
        assert "no latent score logged" not in criteria
        assert (f"seed0 {id} r2 {held['r2']:+.3f} < {LEARNED_BY:g}" in criteria) == (held["r2"] < LEARNED_BY)
        assert (NOT_LEARNED in verdicts[variant]) == (not learned)  # no verdict read off a term that did not learn


def test_a_score_is_held_to_its_own_constant_and_a_missing_one_is_named():
    def variant(*terms: dict) -> VariantLatent:
        runs = [RunLatent(f"lab/seed{i}", i, 2.5, 2.9, 10.0, {"d2v": term}, "monitor") for i, term in enumerate(terms)]
        return VariantLatent("lab", "mlm", runs)

    own = {"metric": "agreement", "constant": 0.5}
    above = variant({**own, "score": 0.6}, {**own, "score": 0.53})
    assert above.learned and criteria(above, None) == [f"seed1 d2v agreement +0.530 < {0.5 + LEARNED_BY:g}"]
    missing = variant({**own, "score": 0.6}, {**own, "score": None})
    assert not missing.learned and criteria(missing, None) == ["seed1 d2v agreement not logged"]
