"""``protjepa experiment``: the tiny experiment end to end (train, probe, report), a second
invocation that redoes nothing, continued pretraining from a base, the random-init control,
and the experiment file's errors."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from composer.utils.reproducibility import seed_all

from protjepa.build import build_model
from protjepa.cli import main
from protjepa.evaluation.compare import load_results, sign_test
from protjepa.evaluation.seed_stats import mean_results
from protjepa.experiment.records import read_done, read_metrics
from protjepa.experiment.report import NOT_LEARNED, write_report
from protjepa.experiment.runner import run_experiment, train_run
from protjepa.experiment.spec import ExperimentError, load_experiment
from protjepa.export import load_encoder
from protjepa.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "experiments" / "smoke.yaml"
RUNS = ["mlm/seed0", "mlm/seed1", "masked/seed0"]
CONTROL = "random_init_esm2_2x32/seed0"  # smoke's one encoder shape, untrained, its one experiment seed
SECTIONS = ["# Experiment smoke", "## Verdicts", "## Latent term against a constant", "## Per-task results",
            "### Against mlm",
            "## Learning control: against random init", "## Budget used", "## Collapse monitors",
            "## Seeds and statistics", "## Probe notes", "## Plots"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    """The smoke experiment, run once for the module: (experiment, outcome, log lines)."""
    experiment = load_experiment(SMOKE, output=tmp_path_factory.mktemp("smoke"))
    lines: list[str] = []
    outcome = run_experiment(experiment, data_root=str(data_root), console=False, log=lines.append)
    return experiment, outcome, lines


def _table(report: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after the line that starts with ``heading`` (header row
    included, rule row left out)."""
    block = report.split(heading, 1)[1].split("\n", 1)[1]
    rows = []
    for line in block.splitlines():
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows


# --------------------------------------------------------------------------- end to end


def test_first_invocation_trains_and_probes_every_run(finished):
    experiment, outcome, _ = finished
    assert outcome.trained == RUNS and outcome.exported == [CONTROL]
    assert outcome.resumed == [] and outcome.skipped == []
    assert outcome.probed == RUNS + [CONTROL]
    for plan in experiment.runs:
        assert (plan.run_dir / "done").is_file()
        assert (plan.run_dir / "probe" / "results.json").is_file()


def test_report_has_every_section_and_plot(finished):
    experiment, outcome, _ = finished
    report = outcome.report.read_text()
    positions = [report.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    for name in ("loss_curves", "collapse", "deltas"):
        png = experiment.output / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name}.png)" in report


MEAN_STD = r"(-?\d\.\d{4})(?: ± \d\.\d{4})?"


def test_wlt_totals_agree_with_the_per_task_table(finished):
    experiment, outcome, _ = finished
    report = outcome.report.read_text()
    table = _table(report, "### Against mlm")
    header, body = table[0], table[1:]
    assert header[:3] == ["task", "metric", "mlm"] and header[3:] == ["masked"]
    tasks = [row for row in body if not row[0].startswith("**")]
    assert [row[0] for row in tasks] == ["stability", "scope40"]
    baselines = [re.fullmatch(MEAN_STD, row[2]) for row in tasks]
    # masked has one seed, mlm two: no seed in common, a two-sample test on mlm's seed noise
    outcomes = [re.fullmatch(MEAN_STD + r" \(([+-]\d\.\d{4}), p ([\d.e-]+), ([WLT])\)", row[3]) for row in tasks]
    assert all(baselines) and all(outcomes)
    for base, match in zip(baselines, outcomes):  # delta = variant - baseline
        delta = float(match.group(1)) - float(base.group(1))
        assert float(match.group(2)) == pytest.approx(delta, abs=2e-4)
        assert match.group(4) == ("T" if float(match.group(3)) >= 0.05 else "W" if delta > 0 else "L")
    counts = {k: sum(m.group(4) == k for m in outcomes) for k in "WLT"}
    totals = {row[0]: row[3] for row in body if row[0].startswith("**")}
    assert totals["**W / L / T, per-task rule**"] == f"**{counts['W']} / {counts['L']} / {counts['T']}**"
    verdict = _table(report, "## Verdicts")[1]
    assert verdict[:3] == ["masked", "mlm", "2"]
    assert verdict[6] == f"{counts['W']} / {counts['L']} / {counts['T']}"
    readout = json.loads((experiment.output / "runs" / "masked" / "seed0" / "readout.json").read_text())
    learned = readout["latent"]["jepa"]["lift"] > 0  # 3 steps: usually not
    # two tasks can never give a Wilcoxon p < 0.05; no verdict at all where the latent term did not learn
    assert verdict[8] == ("not separable from noise" if learned else NOT_LEARNED)


def test_latent_section_reads_each_runs_readout(finished):
    experiment, outcome, lines = finished
    assert outcome.read_out == RUNS and any(line == "== reading out masked/seed0 (ckpt-1.000.pt)" for line in lines)
    report = outcome.report.read_text()
    runs = _table(report, "## Latent term against a constant")
    assert runs[0][:4] == ["run", "held-out MLM loss (constant)", "effective rank", "latent score"]
    for row in runs[1:]:
        run = row[0].split(" ")[0]
        readout = json.loads((experiment.output / "runs" / run / "readout.json").read_text())
        mlm = readout["mlm"]["mlm"]
        assert row[1] == f"{mlm['loss']:.4f} ({mlm['unigram_entropy']:.4f})"
        if run == "masked/seed0":
            jepa = readout["latent"]["jepa"]
            assert row[0] == "masked/seed0 (jepa)" and row[3] == f"lift {jepa['lift']:+.4f}"
            assert row[4] == f"{jepa['cosine']:.4f} ({jepa['cosine_of_mean']:.4f})"
            assert row[5] == " / ".join(f"{jepa['readout_r2'][k]:.4f}" for k in ("student", "predictions", "residue"))
        else:
            assert row[3:] == ["-", "-", "-"]
    variants = {row[0]: row for row in _table(report, "Per variant.")}
    lift = json.loads((experiment.output / "runs" / "masked" / "seed0" / "readout.json").read_text())["latent"]["jepa"]
    assert variants["masked"][1] == "mlm" and variants["masked"][5] == ("yes" if lift["lift"] > 0 else "**no**")
    assert variants["masked"][4] == f"lift {lift['lift']:+.3f}"
    assert variants["mlm"][5] == "-" and variants["mlm"][6] == "(baseline)"


def test_budget_table_shows_what_each_run_used(finished):
    _, outcome, _ = finished
    rows = _table(outcome.report.read_text(), "## Budget used")[1:]
    assert [r[0] for r in rows] == RUNS
    for row in rows:
        assert row[1] == "3"  # the shared steps budget, whatever the recipe said (30min)
        assert int(row[2].replace(",", "")) > 0 and float(row[3]) > 0 and float(row[4]) > 0  # tokens, FLOPs, seconds


def test_the_random_init_control_is_a_from_scratch_run_at_step_0(finished):
    experiment, outcome, _ = finished
    control = experiment.controls[0]
    assert control.folder == experiment.output / "controls" / "random_init_esm2_2x32" / "seed0"
    plan = experiment.runs[0]  # mlm/seed0: from scratch, the control's shape and seed
    seed_all(plan.seed)
    start = build_model(plan.recipe).encoder.state_dict()  # as train() builds it
    exported = load_encoder(control.export).state_dict()
    assert exported.keys() == start.keys()
    assert all(torch.equal(exported[name], start[name]) for name in start)
    scores = load_results(control.folder)["tasks"]
    row = _table(outcome.report.read_text(), "### random_init_esm2_2x32")[2]  # scope40, after stability
    assert row[:3] == ["scope40", "fold_recall@10", f"{scores['scope40']['value']:.4f}"]


def test_seed_statistics_pool_the_two_baseline_seeds(finished):
    _, outcome, _ = finished
    report = outcome.report.read_text()
    rows = _table(report, "## Seeds and statistics")
    assert rows[0] == ["task", "s", "df", "resolution", "MDE", "largest abs delta (variant)"]
    assert [r[0] for r in rows[1:]] == ["stability", "scope40"]
    for row in rows[1:]:  # only mlm has two seeds: one degree of freedom; masked has one seed
        assert row[2] == "1" and row[5].endswith("(masked)")
    assert re.search(r"- \*\*mlm\*\*: 1 pair; per-task rule: \d of \d tests reject", report)
    assert "**Per-task rule.**" in report and "Unit of replication: the task" in report


def test_second_invocation_retrains_and_reprobes_nothing(finished, data_root, capsys):
    experiment, _, _ = finished
    stamps = {p: p.stat().st_mtime_ns for r in experiment.runs for p in (r.run_dir / "checkpoints").iterdir()}
    again = run_experiment(load_experiment(SMOKE, output=experiment.output), data_root=str(data_root),
                           console=False, log=lambda line: None)
    assert again.trained == [] and again.resumed == [] and again.probed == [] and again.exported == []
    assert again.skipped == RUNS + [CONTROL]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert main(["experiment", str(SMOKE), "--dry-run", "--output", str(experiment.output)]) == 0
    plan = capsys.readouterr().out
    assert plan.count(": done ") == 3 and "new" not in plan
    assert f"control {CONTROL} (untrained): exported " in plan


def test_a_changed_experiment_does_not_reuse_stale_runs(finished, tmp_path):
    experiment, _, _ = finished
    raw = yaml.safe_load(SMOKE.read_text())
    raw["budget"] = {"steps": 4}
    changed = tmp_path / "smoke.yaml"
    changed.write_text(yaml.safe_dump(raw))  # its variants name shipped recipes: they resolve from anywhere
    with pytest.raises(ExperimentError, match=r"mlm/seed0 was trained from another recipe "
                                              r"\(budget.steps: 3 there, 4 now\)"):
        run_experiment(load_experiment(changed, output=experiment.output), console=False, log=lambda line: None)


def test_a_changed_compile_setting_reuses_the_runs(finished, tmp_path):
    """train.compile says how the step runs, not what it trains: runs saved with another value are kept."""
    experiment, _, _ = finished
    raw = yaml.safe_load(SMOKE.read_text())
    raw["set"]["train.compile"] = True
    changed = tmp_path / "smoke.yaml"
    changed.write_text(yaml.safe_dump(raw))
    again = run_experiment(load_experiment(changed, output=experiment.output), console=False, log=lambda line: None)
    assert again.trained == [] and again.skipped == RUNS + [CONTROL]


# --------------------------------------------------------------------------- continued pretraining


CONTINUED = """\
name: continued
baseline: mlm
budget: {steps: 2}
encoder: {name: esm2, num_layers: 2, embed_dim: 32, attention_heads: 4}
data: {crop: 64, batch_tokens: 512, shuffle_buffer: 64}
set: {train.device: cpu, train.log_every: 1, train.monitor_every: 2, train.monitor_sequences: 8,
      train.checkpoint_at: [0.5, 1.0], optim.warmup: 1}
base:
  recipe: mlm
  budget: {steps: 4}
  seed: 3
  set: {optim.lr: 1.0e-3}
variants:
  - recipe: mlm
  - recipe: mlm_jepa_ema_half
    name: ema
probe: {tasks: [stability], check_leakage: false, max_train: 100, max_test: 50}
"""
CONTINUED_RUNS = ["mlm/seed0", "ema/seed0"]


@pytest.fixture(scope="module")
def continued(tmp_path_factory, data_root):
    """The base trained alone and cut off after its half-way checkpoint (as if interrupted there),
    then the whole experiment run: (experiment, outcome)."""
    folder = tmp_path_factory.mktemp("continued")
    (folder / "continued.yaml").write_text(CONTINUED)
    experiment = load_experiment(folder / "continued.yaml", output=folder / "out")
    base = experiment.base.run_dir
    train_run(experiment.base, data_root=str(data_root), console=False, log=lambda line: None)
    for path in (base / "done", base / "checkpoints" / "ckpt-1.000.pt", base / "checkpoints" / "ckpt-1.000.pt.sha256"):
        path.unlink()
    shutil.rmtree(base / "export")
    outcome = run_experiment(experiment, data_root=str(data_root), console=False, log=lambda line: None)
    return experiment, outcome


def test_the_interrupted_base_resumes_then_every_variant_trains(continued):
    experiment, outcome = continued
    assert experiment.base.run_dir == experiment.output / "base"
    assert outcome.resumed == ["base/seed3"] and outcome.trained == CONTINUED_RUNS
    assert outcome.exported == ["random_init_esm2_2x32/seed0"]
    assert outcome.probed == ["base/seed3", *CONTINUED_RUNS, "random_init_esm2_2x32/seed0"]
    assert read_done(experiment.base.run_dir)["summary"]["steps"] == 4  # the base's own budget
    assert load_recipe(experiment.base.run_dir / "recipe.yaml").optim.lr == 1.0e-3


def test_a_variant_starts_from_the_base_weights_with_a_new_predictor(continued):
    experiment, _ = continued
    export = experiment.base.run_dir / "export"
    base_state = load_encoder(export).state_dict()
    assert any(name.startswith("lm_head.") for name in base_state)
    ema = next(r for r in experiment.runs if r.variant == "ema")
    recipe = load_recipe(ema.run_dir / "recipe.yaml")  # what train() built the run from
    assert recipe.encoder.checkpoint == str(export)
    seed_all(recipe.seed)
    model = build_model(recipe)  # the run's step-0 model
    for module in (model.encoder, model.teacher):  # the EMA teacher is copied after the load
        state = module.state_dict()
        assert state.keys() == base_state.keys()
        assert all(torch.equal(state[name], base_state[name]) for name in base_state)
    # The predictor is new: the same as a from-scratch build with this seed, not a trained one.
    seed_all(recipe.seed)
    scratch = build_model(recipe.model_copy(update={"encoder": recipe.encoder.model_copy(update={"checkpoint": None})}))
    new = {n: t for n, t in model.state_dict().items() if not n.startswith(("encoder.", "teacher."))}
    fresh = {n: t for n, t in scratch.state_dict().items() if not n.startswith(("encoder.", "teacher."))}
    assert new and new.keys() == fresh.keys()
    assert all(torch.equal(new[n], fresh[n]) for n in new)
    assert not torch.equal(scratch.encoder.state_dict()["lm_head.bias"], base_state["lm_head.bias"])


def test_the_report_names_the_base_and_sets_everything_against_random_init(continued):
    experiment, outcome = continued
    report = outcome.report.read_text()
    assert "- continued pretraining: every variant starts from the final weights (encoder and LM head) of the " \
           "**base**, `mlm`, esm2 2 x 32, budget **steps 4**, seed 3 (it ran 4 steps, " in report
    budget = _table(report, "## Budget used")[1:]
    assert [(r[0], r[1]) for r in budget] == [("base/seed3", "4"), ("mlm/seed0", "2"), ("ema/seed0", "2")]
    control = _table(report, "### random_init_esm2_2x32")
    assert control[0] == ["task", "metric", "random init (seeds 0)", "base (start)", "mlm", "ema"]
    random = load_results(experiment.controls[0].folder)["tasks"]["stability"]["value"]
    base = load_results(experiment.base.run_dir)["tasks"]["stability"]["value"]
    row = control[1]
    assert row[:3] == ["stability", "spearman", f"{random:.4f}"]
    delta = base - random
    assert row[3] == f"{base:.4f} ({delta:+.4f}, T)"  # one seed on each side: no noise to test with, a tie
    tasks = len(load_results(experiment.controls[0].folder)["tasks"])
    for name in ("base (start)", "mlm", "ema"):
        assert f"- **{name}** does **not** beat random init on most tasks beyond noise: 0 of {tasks} tasks won under " \
               f"the per-task rule ({tasks} without measured seed noise: ties)" in report
    assert (experiment.controls[0].export / "encoder.yaml").is_file()


def test_a_second_invocation_skips_the_base_the_runs_and_the_control(continued, data_root, capsys):
    experiment, _ = continued
    again = run_experiment(load_experiment(experiment.path, output=experiment.output), data_root=str(data_root),
                           console=False, log=lambda line: None)
    assert again.trained == again.resumed == again.probed == again.exported == []
    assert again.skipped == ["base/seed3", *CONTINUED_RUNS, "random_init_esm2_2x32/seed0"]
    assert main(["experiment", str(experiment.path), "--dry-run", "--output", str(experiment.output)]) == 0
    plan = capsys.readouterr().out
    assert "base (the variants marked 'from the base' start from its final weights) from mlm, budget steps 4" in plan
    assert "variant ema (vs mlm, from the base) from" in plan
    assert f"seed 3: done   {experiment.output / 'base'}" in plan


# --------------------------------------------------------------------------- pieces


def test_seed_means_by_hand():
    seeds = [{"tasks": {"a": {"metric": "spearman", "value": 0.5}, "b": {"metric": "auc", "value": 0.9}}},
             {"tasks": {"a": {"metric": "spearman", "value": 0.2}, "b": {"metric": "auc", "value": None}}}]
    mean = mean_results(seeds)["tasks"]
    assert mean["a"] == {"metric": "spearman", "value": pytest.approx(0.35), "missing": 0}
    assert mean["b"] == {"metric": "auc", "value": 0.9, "missing": 1}  # the seeds that scored it, the others counted


SEEDED = """\
name: seeded
baseline: mlm
seeds: [0, 1, 2]
budget: {steps: 2}
variants:
  - recipe: RECIPES/mlm.yaml
  - recipe: RECIPES/mlm_jepa_masked.yaml
    name: better
  - recipe: RECIPES/mlm_jepa_all.yaml
    name: same
probe: {tasks: [stability]}
"""


def _fake_runs(experiment, scores) -> None:
    """A done marker and probe results for every run, as if trained and probed: ``scores`` maps
    a variant to one {task: value} a seed."""
    for plan in experiment.runs:
        plan.run_dir.mkdir(parents=True)
        summary = {"steps": 2, "tokens": 100, "train_seconds": 1.0, "tokens_per_s": 100.0}
        (plan.run_dir / "done").write_text(json.dumps({"summary": summary}))
        (plan.run_dir / "probe").mkdir()
        tasks = {task: {"metric": "spearman", "value": value}
                 for task, value in scores[plan.variant][plan.seed].items()}
        (plan.run_dir / "probe" / "results.json").write_text(json.dumps({"tasks": tasks}))


def test_report_from_three_seeds_states_the_rule_and_the_verdicts(tmp_path):
    """Six tasks, three seeds a variant: ``better`` beats mlm by 0.1 on every task and seed (a win);
    ``same`` is mlm with its seeds' scores shuffled (not separable from noise)."""
    experiment = load_experiment(_write(tmp_path, SEEDED), output=tmp_path / "out")
    jitter = [0.00, 0.02, 0.01]
    mlm = [{f"t{i}": 0.5 + 0.03 * i + jitter[(k + i) % 3] for i in range(6)} for k in range(3)]
    scores = {"mlm": mlm, "better": [{t: v + 0.1 for t, v in seed.items()} for seed in mlm],
              "same": [mlm[1], mlm[2], mlm[0]]}
    _fake_runs(experiment, scores)
    report = write_report(experiment).read_text()
    verdicts = {row[0]: row for row in _table(report, "## Verdicts")[1:]}
    # better: +0.1 on every task in every seed: six tasks of one sign, Wilcoxon and sign test p = 2 / 2^6
    assert verdicts["better"][2:8] == ["6", verdicts["better"][3], "0.0312 (0.0625)", "6 / 0 (0.0312)", "6 / 0 / 0",
                                       "6 / 0 / 0 (0.01562 / 1)"]
    assert verdicts["better"][3].startswith("+10.00 ")  # 0.1 over a seed noise of 0.01
    # Holm over the two arms doubles the smaller p: 0.0625, no verdict with six tasks and two arms
    assert verdicts["better"][8] == "not separable from noise"
    assert verdicts["same"][6] == "0 / 0 / 6" and verdicts["same"][8] == "not separable from noise"
    assert "**Verdict.** Test: the Wilcoxon signed-rank test" in report
    # every task has the same seed noise: jitter 0, 0.02, 0.01 has sample std 0.01 in every variant
    rows = _table(report, "## Seeds and statistics")[1:]
    assert {tuple(r[1:4]) for r in rows} == {("0.0100", "6", "0")}
    assert all(r[5] == "0.1000 (better)" for r in rows)
    assert "- **mlm**: 3 pairs" in report and "- **better**: 3 pairs" in report
    cell = _table(report, "### Against mlm")[1]
    assert cell[:3] == ["t0", "spearman", "0.5100 ± 0.0100"] and cell[3] == "0.6100 ± 0.0100 (+0.1000, p 0, W)"
    assert (experiment.output / "plots" / "deltas.png").is_file()


def test_metrics_of_a_resumed_run_drop_the_redone_stretch(tmp_path):
    log = tmp_path / "metrics.jsonl"
    steps = [("train", 1), ("train", 2), ("monitor", 2), ("train", 3), ("train", 2), ("monitor", 2), ("train", 3)]
    log.write_text("".join(f'{{"kind": "{k}", "step": {s}, "seconds": {i}}}\n' for i, (k, s) in enumerate(steps)))
    kept = [(r["kind"], r["step"], r["seconds"]) for r in read_metrics(log)]
    assert kept == [("train", 1, 0), ("train", 2, 4), ("monitor", 2, 5), ("train", 3, 6)]


# --------------------------------------------------------------------------- experiment file errors


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("RECIPES", str(REPO / "recipes")))
    return path


GOOD = """\
name: tiny
baseline: mlm
budget: {steps: 2}
variants:
  - recipe: RECIPES/mlm.yaml
  - recipe: RECIPES/mlm_jepa_masked.yaml
probe: {tasks: [stability]}
"""


@pytest.mark.parametrize("edit, message", [
    (("baseline: mlm", "baseline: nope"), r"exp.yaml:2: baseline: no variant named 'nope' \(variants: mlm, mlm_jepa_masked\)"),
    (("budget: {steps: 2}", "budget: {steps: 2, tokens: 5}"), r"exp.yaml:3: budget: give exactly one of"),
    (("  - recipe: RECIPES/mlm_jepa_masked.yaml", "  - recipe: RECIPES/mlm_jepa_masked.yaml\n    set: {budget.steps: 9}"),
     r"exp.yaml:7: variants\[1\].set: the budget is shared by every run: set it at the top level"),
    (("  - recipe: RECIPES/mlm_jepa_masked.yaml", "  - recipe: RECIPES/mlm.yaml"),
     r"exp.yaml:6: variants\[1\]: two variants are named 'mlm': give one a name:"),
    (("  - recipe: RECIPES/mlm_jepa_masked.yaml", "  - recipe: RECIPES/mlm_jepa_masked.yaml\n    set: {objectives.1.loss: huber}"),
     r"exp.yaml:6: variants\[1\]: .*mlm_jepa_masked.yaml:\d+: objectives\[1\]\.loss: expected cosine\|mse\|smooth_l1"),
    (("budget: {steps: 2}", "budget: {steps: 2}\ndata: {crop: 2}"), r"exp.yaml:4: data.crop: Input should be greater"),
    (("budget: {steps: 2}", "budget: {steps: 2}\ndata: {batch_tokens: fill}"),
     r"exp.yaml:4: data: batch_tokens: fill sizes each run's batches by its own step's memory, so the "
     r"runs would train on different batches: give a number \(data: \{batch_tokens: N\}\)$"),
    (("  - recipe: RECIPES/mlm.yaml", "  - recipe: RECIPES/mlm.yaml\n    set: {data.batch_tokens: fill}"),
     r"exp.yaml:5: variants\[0\]: data.batch_tokens: fill sizes each run's batches by its own step's memory, so the "
     r"runs would train on different batches: give a number \(data: \{batch_tokens: N\}\)$"),
    (("tasks: [stability]", "tasks: [stabilty]"), r"exp.yaml:7: probe.tasks: unknown task 'stabilty'"),
    (("  - recipe: RECIPES/mlm.yaml", "  - recipe: RECIPES/missing.yaml"), r"exp.yaml:5: variants\[0\]: .*missing.yaml: no such recipe file"),
    (("budget: {steps: 2}", "budget: {steps: 2}\nbase:\n  recipe: mlm\n  budget: {wall_clock: 5min}"),
     r"exp.yaml:6: base.budget: give tokens or steps: a wall_clock base would depend on how busy the machine was$"),
    (("budget: {steps: 2}", "budget: {steps: 2}\nbase:\n  recipe: mlm_jepa_masked\n  budget: {steps: 5}"),
     r"exp.yaml:5: base.recipe: the base must be MLM-only pretraining; its objectives: mlm, jepa$"),
    (("  - recipe: RECIPES/mlm_jepa_masked.yaml",
      "  - recipe: RECIPES/mlm_jepa_masked.yaml\n    set: {encoder.num_layers: 1}\nbase:\n  recipe: mlm\n"
      "  budget: {tokens: 1000}"),
     r"exp.yaml:6: variants\[1\] \(mlm_jepa_masked\): encoder.num_layers: 1 here, None in the base: every variant"),
])
def test_experiment_file_errors_name_file_line_and_key(tmp_path, edit, message):
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ExperimentError, match=message):
        load_experiment(path)


def test_a_variant_from_scratch_beside_continued_ones_keeps_its_own_shape(tmp_path):
    text = GOOD.replace("  - recipe: RECIPES/mlm_jepa_masked.yaml",
                        "  - recipe: RECIPES/mlm_jepa_masked.yaml\n    from_base: false\n    set: {encoder.num_layers: 1}\n"
                        "base:\n  recipe: mlm\n  budget: {tokens: 1000}")
    experiment = load_experiment(_write(tmp_path, text), output=tmp_path / "out")
    continued, scratch = experiment.runs
    assert continued.recipe.encoder.checkpoint == str(tmp_path / "out" / "base" / "export")
    assert scratch.recipe.encoder.checkpoint is None and scratch.recipe.encoder_config.num_layers == 1
    assert [v.from_base for v in experiment.variants] == [True, False]
    assert len({c.shape for c in experiment.controls}) == 2  # one random init per compared shape


def test_only_names_a_variant(tmp_path):
    experiment = load_experiment(_write(tmp_path, GOOD), output=tmp_path / "out")
    assert [r.label for r in experiment.runs] == ["mlm/seed0", "mlm_jepa_masked/seed0"]
    assert experiment.runs[1].recipe.budget.steps == 2 and experiment.runs[1].recipe.name == "mlm_jepa_masked-seed0"
    with pytest.raises(ExperimentError, match=r"--only mlm_jepa: no such variant .* \(variants: mlm, mlm_jepa_masked\)"):
        run_experiment(experiment, only=["mlm_jepa"], dry_run=True)


def test_budget_override_replaces_the_shared_budget_of_every_run():
    path = Path(__file__).resolve().parents[1] / "recipes" / "experiments" / "paper_small.yaml"
    experiment = load_experiment(path, budget={"steps": 7})
    assert len(experiment.runs) == 7
    assert {run.recipe.budget.steps for run in experiment.runs} == {7}
    assert {run.recipe.budget.wall_clock for run in experiment.runs} == {None}
