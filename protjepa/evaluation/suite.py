"""Run a list of tasks on one frozen encoder: load, check leakage, subsample, embed, probe, score.

Results are plain dicts (written as ``results.json`` and ``results.md``): per task its main
metric and value, every metric, the train/test sizes, the notes that qualify the number
(subsampled, trained on a validation file, cross-validated, leaked sequences dropped)
and the seconds it took. A task that cannot run (missing data, no LM head, a bad label) is
recorded with its error and the suite goes on; so is one that fails in a way we did not foresee
(its exception type is recorded), so that a long suite never loses the tasks already done.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from protjepa.errors import UserError
from protjepa.evaluation.embed import Embedder
from protjepa.evaluation.examples import EXAMPLES_FILE, RECALL, TaskExamples, task_examples, write_examples
from protjepa.evaluation.leakage import Corpus
from protjepa.evaluation.probes import (
    binary_metrics,
    logistic_scores,
    multiclass_metrics,
    regression_metrics,
    ridge_predict,
)
from protjepa.evaluation.retrieval import retrieval_metrics
from protjepa.evaluation.tables import TaskDataError
from protjepa.evaluation.task_data import TaskData, load_task
from protjepa.evaluation.settings import SuiteSettings
from protjepa.evaluation.tasks import PER_RESIDUE, TaskSpec
from protjepa.evaluation.variant_effect import consensus, masked_marginal_scores
from protjepa.provenance import file_record

RESULTS_FORMAT = 1


# --------------------------------------------------------------------------- per task type
# Each returns the task's metrics and its scored examples (protjepa.evaluation.examples; None when
# its main metric cannot be rescored from them).

Scored = tuple[dict, TaskExamples | None]


def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.int64)


def _pooled(data: TaskData, embedder: Embedder) -> Callable[[np.ndarray], np.ndarray]:
    """Embed every kept record once; returns record indices -> [n, D] features."""
    kept = np.flatnonzero(data.part >= 0)
    features = embedder.pooled([data.sequences[i] for i in kept], desc=data.spec.name)
    row = np.full(len(data.part), -1)
    row[kept] = np.arange(len(kept))
    return lambda index: features[row[index]]


def _check_fold(data: TaskData, train: np.ndarray, test: np.ndarray, labels: np.ndarray | None = None) -> None:
    """A fit needs training and test records and, for a classifier (``labels``: the training ones), two
    classes or more: else a one-line error naming the task, not a fit on nothing (or a constant score)."""
    spec = data.spec
    where = f"{spec.source}: task {spec.name}"
    for part, index in (("training", train), ("test", test)):
        if not len(index):
            raise TaskDataError(f"{where}: no {part} records left to probe (check its files, split and caps)")
    if labels is not None and len(found := np.unique(labels)) < 2:
        raise TaskDataError(f"{where}: every training {'residue' if spec.type in PER_RESIDUE else 'record'} is of "
                            f"one class ({found[0] if len(found) else 'none labelled'}): a probe cannot learn to tell "
                            "classes apart (check its labels and split)")


def _sequence_probe(data: TaskData, embedder: Embedder) -> Scored:
    spec, features = data.spec, _pooled(data, embedder)
    targets = np.asarray(data.targets, dtype=object)
    scored = data.scored
    sequences = [data.sequences[i] for i in np.flatnonzero(scored)]
    if spec.type == "regression":
        y = targets.astype(np.float64)
        prediction = np.zeros(len(y))
        for train, test in data.folds():
            _check_fold(data, train, test)
            prediction[test] = ridge_predict(features(train), y[train], features(test))
        return regression_metrics(prediction[scored], y[scored]), task_examples(
            spec.metric, sequences, _ones(len(sequences)), prediction=prediction[scored], truth=y[scored])
    if spec.type == "binary":
        y = (targets == spec.positive).astype(bool)
        scores = np.zeros(len(y))
        for train, test in data.folds():
            _check_fold(data, train, test, targets[train])
            scores[test] = logistic_scores(features(train), y[train], features(test), 2, embedder.device)
        return binary_metrics(scores[scored], y[scored]), task_examples(
            spec.metric, sequences, _ones(len(sequences)), prediction=scores[scored] > 0, truth=y[scored],
            score=scores[scored], positive=y[scored])
    predicted = np.empty(len(targets), dtype=object)
    for train, test in data.folds():
        _check_fold(data, train, test, targets[train])
        classes, codes = np.unique(targets[train], return_inverse=True)
        scores = logistic_scores(features(train), codes, features(test), len(classes), embedder.device)
        predicted[test] = classes[scores.argmax(1)] if len(classes) > 2 else classes[(scores > 0).astype(int)]
        unseen = int((~np.isin(targets[test], classes)).sum())
        if unseen:
            data.notes.append(f"{unseen} test records have a class absent from training (always wrong)")
    return multiclass_metrics(predicted[scored], targets[scored]), task_examples(
        spec.metric, sequences, _ones(len(sequences)), prediction=predicted[scored], truth=targets[scored])


def _residue_probe(data: TaskData, embedder: Embedder) -> Scored:
    spec = data.spec
    kept = np.flatnonzero(data.part >= 0)
    residues = dict(zip(kept, embedder.per_residue([data.sequences[i] for i in kept], desc=spec.name)))
    classify = spec.type == "per_residue_classification"
    binary = classify and len(spec.classes) == 2
    positive = spec.classes.index(spec.positive) if binary and spec.positive is not None else 1

    def labelled(i: int) -> np.ndarray:
        return data.targets[i] >= 0 if classify else ~np.isnan(data.targets[i])

    def stack(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.concatenate([data.targets[i] for i in index])
        mask = np.concatenate([labelled(i) for i in index])
        x = np.concatenate([residues[i] for i in index]).astype(np.float32)
        return x[mask], y[mask]

    truth, output, tested = [], [], []
    for train, test in data.folds():
        _check_fold(data, train, test)
        (x_train, y_train), (x_test, y_test) = stack(train), stack(test)
        _check_fold(data, y_train, y_test, np.array([spec.classes[int(c)] for c in np.unique(y_train)])
                    if classify else None)
        truth.append(y_test)
        tested.append(test)
        if not classify:
            output.append(ridge_predict(x_train, y_train, x_test))
        elif binary:
            output.append(logistic_scores(x_train, y_train == positive, x_test, 2, embedder.device))
        else:
            output.append(logistic_scores(x_train, y_train, x_test, len(spec.classes), embedder.device).argmax(1))
    truth, output, tested = np.concatenate(truth), np.concatenate(output), np.concatenate(tested)
    sizes = np.array([labelled(i).sum() for i in tested], dtype=np.int64)
    has_labels = sizes > 0  # a chain without a labelled residue adds no element
    sequences = [data.sequences[i] for i in tested[has_labels]]
    sizes = sizes[has_labels]
    if not classify:
        return regression_metrics(output, truth), task_examples(spec.metric, sequences, sizes, prediction=output,
                                                                 truth=truth)
    if binary:
        predicted = np.where(output > 0, positive, 1 - positive)
        metrics = {**multiclass_metrics(predicted, truth), "auc": binary_metrics(output, truth == positive)["auc"]}
        return metrics, task_examples(spec.metric, sequences, sizes, prediction=predicted, truth=truth, score=output,
                                      positive=truth == positive)
    return multiclass_metrics(output, truth), task_examples(spec.metric, sequences, sizes, prediction=output,
                                                            truth=truth)


def _retrieval(data: TaskData, embedder: Embedder) -> Scored:
    spec = data.spec
    kept = np.flatnonzero(data.part >= 0)
    features = embedder.pooled([data.sequences[i] for i in kept], desc=spec.name)
    metrics, queries, hits = retrieval_metrics(features, [data.targets[i] for i in kept], spec.levels, spec.ks)
    data.notes.append("queries counted: " + ", ".join(f"{n} at {level}" for level, n in queries.items()))
    main = RECALL.fullmatch(spec.metric)
    if main is None or main.group(1) not in hits:
        return metrics, None
    counted, first_hit = hits[main.group(1)]
    sequences = [data.sequences[i] for i in kept[counted]]
    return metrics, task_examples(spec.metric, sequences, _ones(len(sequences)), prediction=None, truth=None,
                                  hit=first_hit < int(main.group(2)))


def _variant_effect(data: TaskData, embedder: Embedder) -> Scored:
    kept = np.flatnonzero(data.part >= 0)
    lengths = np.array([len(data.sequences[i]) for i in kept])
    wild_type = data.wild_type
    if wild_type is None:  # 'consensus'
        common = np.bincount(lengths).argmax()
        wild_type = consensus([data.sequences[i] for i in kept[lengths == common]])
    indels = lengths != len(wild_type)
    if indels.any():  # a substitution score has no meaning for them
        other_length = np.isin(np.arange(len(data.part)), kept[indels])
        data.leave_out(other_length, "variants of another length than the wild type")
        kept = kept[~indels]
    sequences = [data.sequences[i] for i in kept]
    scores = masked_marginal_scores(embedder.encoder, wild_type, sequences)
    truth = np.asarray(data.targets, dtype=np.float64)[kept]
    return regression_metrics(scores, truth), task_examples(data.spec.metric, sequences, _ones(len(kept)),
                                                            prediction=scores, truth=truth)


EVALUATORS = {
    "regression": _sequence_probe,
    "binary": _sequence_probe,
    "multiclass": _sequence_probe,
    "per_residue_classification": _residue_probe,
    "per_residue_regression": _residue_probe,
    "retrieval": _retrieval,
    "variant_effect": _variant_effect,
}


# --------------------------------------------------------------------------- the suite


def check_leakage(data: TaskData, corpus: Corpus, settings: SuiteSettings) -> dict:
    """Count corpus matches per part; drop the scored ones when asked."""
    exact = corpus.exact(data.sequences)
    report = {"exact": {name: int((exact & (data.part == p)).sum()) for p, name in data.part_names.items()}}
    if settings.drop_leaked:
        data.leave_out(exact & data.scored, "exact matches in the pretraining corpus")
    if settings.drop_identity is not None:
        scored = np.flatnonzero(data.scored)
        found = corpus.similar([data.sequences[i] for i in scored], settings.drop_identity)
        if found is None:
            data.notes.append("mmseqs is not on PATH: the identity filter was skipped")
        else:
            similar = np.zeros(len(data.part), dtype=bool)
            similar[scored[found]] = True
            report["similar"] = {name: int((similar & (data.part == p)).sum()) for p, name in data.part_names.items()}
            data.leave_out(similar, f"sequences >= {settings.drop_identity:.0%} identical to the corpus (mmseqs)")
    return report


def run_task(spec: TaskSpec, root: str | Path, embedder: Embedder, settings: SuiteSettings,
             corpus: Corpus | None = None) -> tuple[dict, TaskExamples | None]:
    """The task's result (as results.json records it) and its scored examples."""
    start, embedding = time.perf_counter(), embedder.seconds
    data = load_task(spec, root)
    leakage = check_leakage(data, corpus, settings) if corpus is not None else None
    data.subsample(settings.caps(spec), settings.seed)
    metrics, examples = EVALUATORS[spec.type](data, embedder)
    return {
        "description": spec.description,
        "type": spec.type,
        "metric": spec.metric,
        "value": metrics.get(spec.metric),
        "metrics": metrics,
        "n_train": int(data.trained.sum()),
        "n_test": int(data.scored.sum()),
        "notes": data.notes,
        "leakage": leakage,
        "seconds": round(time.perf_counter() - start, 2),
        "embed_seconds": round(embedder.seconds - embedding, 2),  # the rest: loading, fitting, scoring
        **({"examples": examples.summary()} if examples is not None else {}),
    }, examples


def run_probe_suite(specs: list[TaskSpec], embedder: Embedder, root: str | Path, settings: SuiteSettings,
                    corpus: Corpus | None = None, log: Callable[[str], None] = print
                    ) -> tuple[dict, dict[str, TaskExamples]]:
    """Every task's result (``results.json``'s content) and, per task whose main metric they rescore,
    its scored examples (``examples.npz``'s)."""
    examples: dict[str, TaskExamples] = {}
    results = {
        "format": RESULTS_FORMAT,
        "encoder": type(embedder.encoder).__name__,
        "weights": embedder.weights,
        "settings": {**asdict(settings), "layer": embedder.depth, "max_length": embedder.max_length,
                     "bf16": embedder.bf16},
        "corpus": [file_record(p, Path(root)) for p in corpus.paths] if corpus is not None else None,
        "tasks": {},
    }
    for i, spec in enumerate(specs, 1):
        log(f"[{i}/{len(specs)}] {spec.name} ({spec.type}, {spec.metric})")
        try:
            result, scored = run_task(spec, root, embedder, settings, corpus)
        except Exception as exc:  # noqa: BLE001 - one task's failure must not cost the others
            error = str(exc) if isinstance(exc, UserError) else f"failed: {type(exc).__name__}: {exc}"
            result = {"description": spec.description, "type": spec.type, "metric": spec.metric, "value": None,
                      "error": error}
            log(f"    skipped: {error}")
        else:
            if scored is not None:
                examples[spec.name] = scored
            value = result["value"]
            log(f"    {spec.metric} = {'n/a' if value is None else f'{value:.4f}'}  (train {result['n_train']}, "
                f"test {result['n_test']}, {result['seconds']:.1f} s, embedding {result['embed_seconds']:.1f} s)")
            for note in result["notes"]:
                log(f"    note: {note}")
        results["tasks"][spec.name] = result
    done = [r for r in results["tasks"].values() if "seconds" in r]
    total, embedding = sum(r["seconds"] for r in done), sum(r["embed_seconds"] for r in done)
    results["seconds"] = {"total": round(total, 2), "embedding": round(embedding, 2),
                          "rest": round(total - embedding, 2)}
    log(f"{total:.1f} s in all: embedding {embedding:.1f} s, loading, fitting and scoring {total - embedding:.1f} s")
    return results, examples


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def to_markdown(results: dict) -> str:
    lines = [
        f"# Probe results: {results.get('checkpoint', results['encoder'])}",
        "",
        f"Encoder {results['encoder']}, weights sha256 {results['weights'][:16]}; "
        "settings: " + ", ".join(f"{k} {v}" for k, v in results["settings"].items() if v is not None and v is not False),
        "",
        "| task | type | metric | value | train | test | seconds |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    notes = []
    for name, r in results["tasks"].items():
        value = "skipped" if r.get("error") else "n/a" if r["value"] is None else f"{r['value']:.4f}"
        lines.append(f"| {name} | {r['type']} | {r['metric']} | {value} | {r.get('n_train', '')} | "
                     f"{r.get('n_test', '')} | {r.get('seconds', '')} |")
        notes += [f"- {name}: {note}" for note in r.get("notes", [])]
        if r.get("error"):
            notes.append(f"- {name}: skipped: {r['error']}")
        if r.get("leakage"):
            counts = "; ".join(f"{kind}: " + ", ".join(f"{n} {part}" for part, n in parts.items())
                               for kind, parts in r["leakage"].items())
            notes.append(f"- {name}: in the pretraining corpus ({counts})")
    if notes:
        lines += ["", "Notes:", ""] + notes
    if results.get("corpus") is None:
        lines += ["", "Leakage was not checked (no pretraining corpus given)."]
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: str | Path, examples: dict[str, TaskExamples] | None = None
                  ) -> tuple[Path, Path]:
    """``results.json`` and ``results.md``, and ``examples.npz`` with the tasks' scored examples
    (written first: results.json names what it holds); a failed write (a full disk) is one line."""
    out_dir = Path(out_dir)
    results = _json_safe(results)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if examples:
            write_examples(examples, out_dir / EXAMPLES_FILE)
        else:
            (out_dir / EXAMPLES_FILE).unlink(missing_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        md_path.write_text(to_markdown(results))
    except OSError as exc:
        raise UserError(f"{exc.filename or out_dir}: cannot write the probe results: {exc.strerror}") from None
    return json_path, md_path
