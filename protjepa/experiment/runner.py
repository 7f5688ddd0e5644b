"""Run an experiment: train every (variant, seed), probe every final encoder, write the report.

Each run lives in ``<output>/runs/<variant>/seed<k>/`` (the run directory of ``protjepa
train``). ``train.precision: auto`` is decided once for the whole experiment and written into
every such run's recipe (:mod:`protjepa.experiment.fairness`).

A run is finished when its ``done`` marker exists: the marker is written last,
after the encoder export, so a run interrupted at any point has none, and the next
invocation resumes it from its latest budget checkpoint (or starts it again when it has
none). After training, each run's newest checkpoint is read out (``readout.json``: the latent
term against a constant and ridge readouts, :mod:`protjepa.evaluation.readout`). Probe results are kept in the run's ``probe/`` and reused while the encoder weights,
the task list and the probe options are those recorded beside them (``experiment_key.json``,
written after the results).

With a ``base:`` (continued pretraining), the base run in ``<output>/base/`` is trained first
(resumable and guarded the same way, and trained even under ``--only``), and every variant
run loads its export. The random-init controls are built and exported to
``<output>/controls/random_init_<shape>/seed<k>/export/`` (kept while their ``encoder.yaml``
is the shape's section) and probed beside it, with the same cache.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from protjepa.build import encoder_from_spec
from protjepa.encoders.weights import NATIVE_SPEC
from protjepa.evaluation.embed import Embedder
from protjepa.evaluation.leakage import Corpus, run_corpus
from protjepa.evaluation.readout import READOUT, checkpoint_digest, read_out, write_readout
from protjepa.evaluation.suite import run_probe_suite, write_results
from protjepa.experiment.bases import base_digest, read_base
from protjepa.experiment.fairness import decide_precision, with_decided_precision
from protjepa.experiment.plan import chosen_controls, describe_plan, run_status, selected_runs
from protjepa.experiment.records import CACHE_KEY, DONE, INVOCATIONS, PROBE_DIR, RESULTS, read_done
from protjepa.experiment.report import write_report
from protjepa.experiment.spec import BASE, ControlPlan, Experiment, ExperimentError, RunPlan, encoder_section
from protjepa.export import load_encoder, save_encoder
from protjepa.paths import data_root as resolve_data_root
from protjepa.paths import writable_folder
from protjepa.recipe import dump_recipe, load_recipe, recipe_difference, trusted_code
from protjepa.checkpoint_file import latest_checkpoint
from protjepa.training.trainer import LATEST, RunInterrupted, run_records, train


class ExperimentInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during an experiment: what it was doing (the command adds how to go on)."""


@dataclass
class Outcome:
    """What one invocation did to each run (labels ``variant/seedK``)."""

    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    probed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished and probed before
    exported: list[str] = field(default_factory=list)  # random-init controls built and exported now
    read_out: list[str] = field(default_factory=list)  # runs whose latent readout was (re)computed now
    report: Path | None = None


# --------------------------------------------------------------------------- run state


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def run_status(plan: RunPlan) -> str:
    """``done``, ``resume`` (an unfinished run with a checkpoint) or ``new``."""
    if read_done(plan.run_dir) is not None:
        return "done"
    return "resume" if latest_checkpoint(plan.run_dir / "checkpoints") is not None else "new"


def check_same_recipe(plan: RunPlan, trusted: frozenset[str]) -> None:
    """A run directory written from another recipe (the experiment file changed) is not reused. Its
    ``recipe.yaml`` may import only the code the experiment's own recipes name (``trusted``)."""
    saved = plan.run_dir / "recipe.yaml"
    if not saved.is_file():
        return
    # Both resolved: a run written before a default was recorded compares equal.
    old, new = (yaml.safe_load(dump_recipe(r)) for r in (load_recipe(saved, trust_code=trusted), plan.recipe))
    difference = recipe_difference(old, new)
    if difference:
        # The variants started from the base's weights: a changed base makes them stale too.
        stale = plan.run_dir.parent if plan.run_dir.name == BASE else plan.run_dir
        key, there, now = difference
        raise ExperimentError(f"{saved}: {plan.label} was trained from another recipe ({key}: {there} there, {now} now): "
                              f"delete {stale}, or give the experiment another output folder")


def train_run(plan: RunPlan, *, data_root: str | None, console: bool, log: Callable[[str], None],
              trusted: frozenset[str] = frozenset(), notes: tuple[str, ...] = ()) -> str:
    """Train (or resume) one run to the end of its budget; returns its status before: done / resume / new.
    ``trusted``: the code its ``recipe.yaml`` may import (:func:`check_same_recipe`); ``notes``: lines its
    run prints first, after the one naming it."""
    check_same_recipe(plan, trusted)
    status = run_status(plan)
    if status == "done":
        return status
    newest = latest_checkpoint(plan.run_dir / "checkpoints")
    log(f"== {plan.label}: {'resuming from ' + newest.name if newest else 'training'} -> {plan.run_dir}")
    started = time.perf_counter()
    # A run stopped before its first checkpoint left records: --resume starts it again over them.
    result = train(plan.recipe, plan.run_dir, data_root=data_root, resume=LATEST if run_records(plan.run_dir) else None,
                   console=console, notes=(f"experiment run {plan.label}", *notes))
    marker = {
        "summary": result.summary,
        "export": str(result.export_dir.relative_to(plan.run_dir)),
        "checkpoints": sorted(p.name for p in result.checkpoints),
        "wall_seconds_last_invocation": round(time.perf_counter() - started, 1),
    }
    _write_atomic(plan.run_dir / DONE, json.dumps(marker, indent=2) + "\n")
    return status


def adopt_pretrained_base(experiment: Experiment) -> None:
    """Mark the pretrained base (``base.checkpoint``) as the experiment's finished base: ``<output>/base/done``
    names it as the export (probed from there) with its digest and, from its ``base.json``, its training.
    Variants that started from another base's bytes at this path are stale: an error says what to delete."""
    plan, checkpoint = experiment.base, experiment.base_checkpoint
    digest = base_digest(checkpoint)
    before = read_done(plan.run_dir)
    if before is not None and before.get("sha256") == digest:
        return
    started = [r.label for r in experiment.runs if experiment.variant(r.variant).from_base and run_status(r) != "new"]
    if before is not None and started:
        raise ExperimentError(f"{checkpoint}: the pretrained base changed since {', '.join(started)} started from it "
                              f"(sha256 {before.get('sha256', '?')[:16]}... then, {digest[:16]}... now): delete "
                              f"{experiment.output / 'runs'}, or give the experiment another output folder")
    record = read_base(checkpoint) or {}
    marker = {"summary": record.get("training", {}), "export": str(checkpoint.resolve()), "sha256": digest,
              "pretrained": True}
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(plan.run_dir / DONE, json.dumps(marker, indent=2) + "\n")


def export_control(control: ControlPlan) -> bool:
    """Build ``control``'s random-init encoder (seeded as ``train`` seeds a run's initial weights) and
    export it, unless its export holds this shape already; True when it exported."""
    section = encoder_section(control.recipe)
    spec_file = control.export / NATIVE_SPEC  # written last by save_encoder: a complete export
    if spec_file.is_file() and yaml.safe_load(spec_file.read_text()) == section:
        return False
    torch.manual_seed(control.seed)  # what train's seed_all does for the encoder's (torch-only) initialisation
    encoder = encoder_from_spec(control.recipe.encoder, control.recipe.encoder_config)  # no checkpoint: untrained
    save_encoder(encoder, control.export, section)
    return True


def read_out_run(plan: RunPlan, *, data_root: str | None, trusted: frozenset[str],
                 log: Callable[[str], None]) -> bool:
    """Write the finished run's ``readout.json`` (:mod:`protjepa.evaluation.readout`) unless it reads
    its newest checkpoint already; True when it read out now."""
    newest = latest_checkpoint(plan.run_dir / "checkpoints")
    if newest is None:
        log(f"== {plan.label}: no checkpoint left to read out (kept readout: "
            f"{'yes' if (plan.run_dir / READOUT).is_file() else 'none'})")
        return False
    saved = plan.run_dir / READOUT
    if saved.is_file() and json.loads(saved.read_text()).get("checkpoint_sha256") == checkpoint_digest(newest):
        return False
    log(f"== reading out {plan.label} ({newest.name})")
    write_readout(read_out(plan.run_dir, checkpoint=newest, data_root=data_root, trust_code=trusted), plan.run_dir)
    return True


# --------------------------------------------------------------------------- probing


class Prober:
    """Probes final encoders on the experiment's tasks; one corpus digest set shared by every run."""

    def __init__(self, experiment: Experiment, data_root: str | None, trusted: frozenset[str],
                 log: Callable[[str], None]):
        self.experiment = experiment
        self.trusted = trusted  # the code the experiment's recipes name: their exports may import it
        self.options = experiment.spec.probe
        self.settings = self.options.settings()
        self.root = resolve_data_root(data_root)
        self.log = log
        self._corpus = None

    @property
    def corpus(self):
        """The runs' pretraining FASTA files (for the leakage counts), read on first use."""
        if self._corpus is None and self.options.check_leakage:
            files = {f for r in self.experiment.trained_runs if (r.run_dir / "recipe.yaml").is_file()
                     for f in run_corpus(r.run_dir, self.root)}
            self._corpus = Corpus(sorted(files))
        return self._corpus

    def cache_key(self, weights: str) -> dict:
        """What the cached results depend on: the weights, the task list and the probe options."""
        return {"weights": weights, "tasks": [t.name for t in self.experiment.tasks],
                "options": self.options.model_dump(mode="json")}

    def probe(self, label: str, export: Path, folder: Path) -> bool:
        """Probe the encoder in ``export`` into ``folder`` unless its cached results fit; True when it probed."""
        embedder = Embedder(load_encoder(export, trust_code=self.trusted), self.options.layer, cache_dir=None,
                            progress=False)
        key = self.cache_key(embedder.weights)
        if (folder / RESULTS).is_file() and (folder / CACHE_KEY).is_file():
            if json.loads((folder / CACHE_KEY).read_text()) == key:
                return False
        self.log(f"== probing {label} ({len(self.experiment.tasks)} tasks)")
        (folder / CACHE_KEY).unlink(missing_ok=True)
        results, examples = run_probe_suite(self.experiment.tasks, embedder, self.root, self.settings, self.corpus,
                                            log=lambda line: self.log(f"   {line}"))
        results["checkpoint"] = str(export)
        write_results(results, folder, examples)
        _write_atomic(folder / CACHE_KEY, json.dumps(key, indent=2) + "\n")  # last: results without it are redone
        return True


# --------------------------------------------------------------------------- the whole experiment


def run_experiment(
    experiment: Experiment,
    *,
    only: list[str] | tuple[str, ...] = (),
    dry_run: bool = False,
    data_root: str | None = None,
    console: bool = True,
    log: Callable[[str], None] = print,
) -> Outcome:
    """Train, then probe, the runs (of the ``only`` variants, when given); then write the report."""
    runs = selected_runs(experiment, only)
    if dry_run:
        log(describe_plan(experiment, runs))
        return Outcome()
    writable_folder(experiment.output, "experiment output (--output)")  # before hours of training, not after
    # Reading its runs back (their recipe.yaml, their exports) may import the code its own recipes name.
    trusted = trusted_code([plan.recipe for plan in experiment.trained_runs] + [c.recipe for c in experiment.controls])
    outcome = Outcome()
    started = time.time()
    needs_base = any(experiment.variant(r.variant).from_base for r in runs)
    pretrained = experiment.base_checkpoint is not None
    trained = ([experiment.base] if needs_base and not pretrained else []) + runs  # the base first: the variants load it
    decisions = decide_precision(experiment, trained)  # train.precision auto: once, for every arm
    controls = chosen_controls(experiment, runs)
    stage = "starting"
    try:
        if needs_base and pretrained:
            stage = "adopting the pretrained base"
            adopt_pretrained_base(experiment)
        for plan in trained:
            stage = f"training {plan.label}"
            plan, precision = with_decided_precision(plan, decisions)
            status = train_run(plan, data_root=data_root, console=console, trusted=trusted, log=log,
                               notes=(precision,) if precision else ())
            {"new": outcome.trained, "resume": outcome.resumed, "done": outcome.skipped}[status].append(plan.label)
        for control in controls:
            stage = f"exporting the control {control.label}"
            (outcome.exported if export_control(control) else outcome.skipped).append(control.label)
        prober = Prober(experiment, data_root, trusted, log)
        finished = ([experiment.base] if needs_base and pretrained else []) + trained
        probes = [(p.label, p.run_dir / read_done(p.run_dir)["export"], p.run_dir / PROBE_DIR) for p in finished]
        probes += [(c.label, c.export, c.folder / PROBE_DIR) for c in controls]
        for label, export, folder in probes:
            stage = f"probing {label}"
            if prober.probe(label, export, folder):
                outcome.probed.append(label)
                if label in outcome.skipped:
                    outcome.skipped.remove(label)
        for plan in trained:
            stage = f"reading out {plan.label}"
            if read_out_run(plan, data_root=data_root, trusted=trusted, log=log):
                outcome.read_out.append(plan.label)
        stage = "writing the report"
        record_invocation(experiment, started, outcome)
        outcome.report = write_report(experiment)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through the command
        detail = f" ({exc})" if isinstance(exc, RunInterrupted) else ""
        raise ExperimentInterrupted(f"while {stage}{detail}; what had finished is kept") from None
    except OSError as exc:  # a full disk: what had finished is kept, and the same command goes on from there
        raise ExperimentError(f"{exc.filename or experiment.output}: cannot write while {stage}: {exc.strerror}; "
                              "what had finished is kept: run the same command again once there is room") from None
    log(f"report: {outcome.report}")
    return outcome


def record_invocation(experiment: Experiment, started: float, outcome: Outcome) -> None:
    """Append this invocation's wall time and work to ``<output>/invocations.jsonl``: the report's measured duration."""
    ended = time.time()
    record = {"started": _utc(started), "ended": _utc(ended), "seconds": round(ended - started, 1),
              **{what: getattr(outcome, what) for what in ("trained", "resumed", "probed", "read_out")}}
    experiment.output.mkdir(parents=True, exist_ok=True)
    with (experiment.output / INVOCATIONS).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
