"""What an experiment leaves on disk, read back: each run's ``done`` marker, metrics and probe
results, and the per-variant scores over seeds. The runner writes these files; the report
and its plots read them through here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from protjepa.evaluation.readout import READOUT
from protjepa.evaluation.seed_stats import mean_results
from protjepa.experiment.spec import Experiment, RunPlan

DONE = "done"
PROBE_DIR = "probe"
RESULTS = "results.json"
CACHE_KEY = "experiment_key.json"
REPORT = "report.md"
PLOTS = "plots"
HELD_OUT_MLM = "val/mlm/loss"
INVOCATIONS = "invocations.jsonl"  # one line per `protjepa experiment` that trained, probed or read out


def read_done(run_dir: Path) -> dict | None:
    """The ``done`` marker of a finished run (its summary and export folder), or None."""
    marker = run_dir / DONE
    return json.loads(marker.read_text()) if marker.is_file() else None


@dataclass
class RunData:
    plan: RunPlan
    done: dict | None  # None: not finished
    records: list[dict]  # metrics.jsonl, without the records of an interrupted stretch that was redone
    probe: dict | None  # probe/results.json, None: not probed
    readout: dict | None = None  # readout.json (the latent term on held-out rows), None: not read out

    @property
    def summary(self) -> dict:
        return self.done["summary"] if self.done else {}


def read_metrics(path: Path) -> list[dict]:
    """``metrics.jsonl`` in order; after a resume, the records the interrupted run wrote past the
    checkpoint it resumed from are dropped (the resumed run logs those steps again)."""
    if not path.is_file():
        return []
    kept: list[dict] = []
    with path.open() as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            kept = [r for r in kept if r["kind"] != record["kind"] or r["step"] < record["step"]]
            kept.append(record)
    return kept


def run_data(plan: RunPlan) -> RunData:
    done = read_done(plan.run_dir)
    results = plan.run_dir / PROBE_DIR / RESULTS
    probe = {**json.loads(results.read_text()), "path": str(results)} if done and results.is_file() else None
    readout = plan.run_dir / READOUT
    return RunData(plan, done, read_metrics(plan.run_dir / "metrics.jsonl"), probe,
                   json.loads(readout.read_text()) if done and readout.is_file() else None)


def read_invocations(experiment: Experiment) -> list[dict]:
    """The experiment's recorded invocations, in order (empty before the first ends)."""
    path = experiment.output / INVOCATIONS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def collect(experiment: Experiment) -> list[RunData]:
    """The variants' runs (the base is :func:`run_data` of ``experiment.base``)."""
    return [run_data(plan) for plan in experiment.runs]


def collect_controls(experiment: Experiment) -> dict[str, VariantScores]:
    """Per shape, its probed random-init seeds as one variant's scores (every shape listed, even unprobed)."""
    out: dict[str, VariantScores] = {}
    for control in experiment.controls:
        scores = out.setdefault(control.shape, VariantScores(f"random_init_{control.shape}", None, [], []))
        results = control.folder / PROBE_DIR / RESULTS
        if results.is_file():
            scores.probed.append({**json.loads(results.read_text()), "path": str(results)})
            scores.seeds.append(control.seed)
    return out


@dataclass
class VariantScores:
    name: str
    baseline: str | None
    probed: list[dict]  # results of its probed seeds
    seeds: list[int]

    @property
    def mean(self) -> dict:
        return mean_results(self.probed)
