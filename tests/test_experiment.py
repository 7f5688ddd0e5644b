"""``protjepa experiment``: the tiny experiment end to end (train, probe, report), a second
invocation that redoes nothing, and the experiment file's errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from protjepa.cli import main
from protjepa.evaluation.compare import sign_test
from protjepa.experiment.records import mean_results, read_metrics, seed_spread
from protjepa.experiment.runner import run_experiment
from protjepa.experiment.spec import ExperimentError, load_experiment

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "experiments" / "smoke.yaml"
RUNS = ["mlm/seed0", "mlm/seed1", "masked/seed0"]
SECTIONS = ["# Experiment smoke", "## Verdicts", "## Per-task results", "### Against mlm", "## Budget used",
            "## Collapse monitors", "## Seed noise", "## Probe notes", "## Plots"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    """The smoke experiment, run once for the module: (experiment, outcome, log lines)."""
    experiment = load_experiment(SMOKE, output=tmp_path_factory.mktemp("smoke"))
    lines: list[str] = []
    outcome = run_experiment(experiment, data_root=str(data_root), console=False, log=lines.append)
    return experiment, outcome, lines


def _table(report: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading`` (header row included, rule row left out)."""
    block = report.split(heading + "\n", 1)[1]
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
    assert outcome.trained == RUNS
    assert outcome.resumed == [] and outcome.skipped == []
    assert outcome.probed == RUNS
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


def test_wlt_totals_agree_with_the_per_task_table(finished):
    experiment, outcome, _ = finished
    report = outcome.report.read_text()
    table = _table(report, "### Against mlm")
    header, body = table[0], table[1:]
    assert header[:3] == ["task", "metric", "mlm"] and header[3:] == ["masked"]
    tasks = [row for row in body if not row[0].startswith("**")]
    assert [row[0] for row in tasks] == ["stability", "scope40"]
    outcomes = [re.fullmatch(r"(-?\d\.\d{4}) \(([+-]\d\.\d{4}), ([WLT])\)", row[3]) for row in tasks]
    assert all(outcomes)
    for row, match in zip(tasks, outcomes):  # delta = variant - baseline, outcome by the tie tolerance
        delta = float(match.group(1)) - float(row[2])
        assert float(match.group(2)) == pytest.approx(delta, abs=2e-4)
        tie = experiment.spec.tie_tolerance
        assert match.group(3) == ("W" if delta > tie else "L" if delta < -tie else "T") or abs(abs(delta) - tie) < 2e-4
    counts = {k: sum(m.group(3) == k for m in outcomes) for k in "WLT"}
    totals = next(row for row in body if row[0] == "**W / L / T**")[3]
    assert totals == f"**{counts['W']} / {counts['L']} / {counts['T']}**"
    p = next(row for row in body if row[0] == "**sign test p**")[3]
    assert float(p) == pytest.approx(sign_test(counts["W"], counts["L"]), rel=1e-3)
    verdict = _table(report, "## Verdicts")[1]
    assert verdict == ["masked", "mlm", str(counts["W"]), str(counts["L"]), str(counts["T"]), p]


def test_budget_table_shows_what_each_run_used(finished):
    _, outcome, _ = finished
    rows = _table(outcome.report.read_text(), "## Budget used")[1:]
    assert [r[0] for r in rows] == RUNS
    for row in rows:
        assert row[1] == "3"  # the shared steps budget, whatever the recipe said (30min)
        assert int(row[2].replace(",", "")) > 0 and float(row[3]) > 0 and float(row[4]) > 0  # tokens, FLOPs, seconds


def test_seed_noise_compares_the_two_baseline_seeds(finished):
    _, outcome, _ = finished
    report = outcome.report.read_text()
    assert "| task | spread mlm | largest abs delta |" in report
    assert re.search(r"\*\*mlm\*\*: median spread \d\.\d{4}; its seed 1 against its seed 0", report)
    assert re.search(r"masked vs mlm: \d of 2 deltas are beyond seed noise", report)


def test_second_invocation_retrains_and_reprobes_nothing(finished, data_root, capsys):
    experiment, _, _ = finished
    stamps = {p: p.stat().st_mtime_ns for r in experiment.runs for p in (r.run_dir / "checkpoints").iterdir()}
    again = run_experiment(load_experiment(SMOKE, output=experiment.output), data_root=str(data_root),
                           console=False, log=lambda line: None)
    assert again.trained == [] and again.resumed == [] and again.probed == []
    assert again.skipped == RUNS
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert main(["experiment", str(SMOKE), "--dry-run", "--output", str(experiment.output)]) == 0
    plan = capsys.readouterr().out
    assert plan.count(": done ") == 3 and "new" not in plan


def test_a_changed_experiment_does_not_reuse_stale_runs(finished, tmp_path):
    experiment, _, _ = finished
    raw = yaml.safe_load(SMOKE.read_text())
    raw["budget"] = {"steps": 4}
    changed = tmp_path / "smoke.yaml"
    changed.write_text(yaml.safe_dump(raw))  # its variants name shipped recipes: they resolve from anywhere
    with pytest.raises(ExperimentError, match=r"mlm/seed0 was trained from another recipe "
                                              r"\(budget.steps: 3 there, 4 now\)"):
        run_experiment(load_experiment(changed, output=experiment.output), console=False, log=lambda line: None)


# --------------------------------------------------------------------------- pieces


def test_seed_means_and_spreads_by_hand():
    seeds = [{"tasks": {"a": {"metric": "spearman", "value": 0.5}, "b": {"metric": "auc", "value": 0.9}}},
             {"tasks": {"a": {"metric": "spearman", "value": 0.2}, "b": {"metric": "auc", "value": None}}}]
    mean = mean_results(seeds)["tasks"]
    assert mean["a"] == {"metric": "spearman", "value": pytest.approx(0.35)}
    assert mean["b"]["value"] is None  # a seed without a score leaves the task uncompared
    assert seed_spread(seeds) == {"a": pytest.approx(0.3)}


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
    (("tasks: [stability]", "tasks: [stabilty]"), r"exp.yaml:7: probe.tasks: unknown task 'stabilty'"),
    (("  - recipe: RECIPES/mlm.yaml", "  - recipe: RECIPES/missing.yaml"), r"exp.yaml:5: variants\[0\]: .*missing.yaml: no such recipe file"),
])
def test_experiment_file_errors_name_file_line_and_key(tmp_path, edit, message):
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ExperimentError, match=message):
        load_experiment(path)


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
