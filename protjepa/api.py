"""The calls a notebook needs, one import away (``import protjepa``): recipes, models, training,
encoders, embeddings, probes and comparisons. Each is a thin front for the module that does the
work; the command line calls the same modules.

::

    import protjepa
    recipe = protjepa.load_recipe("mlm_jepa_masked", {"budget": {"steps": 20}})
    result = protjepa.train(recipe, "runs/demo")
    encoder = protjepa.load_encoder(result.run_dir)
    vectors = protjepa.embed(encoder, ["MKTAYIAK", "MSEQ"])            # [2, width], mean over residues

An argument of the wrong type is an :class:`~protjepa.errors.ArgumentError` (a ``UserError``) that
names it; where a list is wanted (sequences, tasks, overrides, files) one string is one item.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from protjepa.build import build_model as build_recipe_model
from protjepa.encoders.base import Encoder
from protjepa.errors import ArgumentError
from protjepa.evaluation.compare import DEFAULT_TIE, Comparison, check_comparable, check_results, load_results
from protjepa.evaluation.compare import compare as compare_results
from protjepa.evaluation.embed import Embedder
from protjepa.evaluation.family import FamilyStatistics, family_statistics
from protjepa.evaluation.leakage import Corpus
from protjepa.evaluation.seed_stats import load_seeds
from protjepa.evaluation.suite import SuiteSettings, run_probe_suite, write_results
from protjepa.evaluation.tasks import task_registry
from protjepa.export import load_encoder as load_encoder_path
from protjepa.model import ProtJEPA
from protjepa.paths import data_root as find_data_root
from protjepa.recipe import Recipe, parse_assignment
from protjepa.recipe import load_recipe as load_recipe_file
from protjepa.shipped import shipped

__all__ = ["load_recipe", "recipes", "build_model", "train", "load_encoder", "embed", "probe", "compare",
           "compare_seeds"]

Overrides = Mapping[str, Any] | Sequence[str | tuple[str, Any]]
CAPS = tuple(f.name for f in dataclasses.fields(SuiteSettings) if f.name != "fast")  # probe's **caps


def recipes() -> list[str]:
    """The names of the shipped recipes and experiment files (``protjepa recipes``)."""
    return [entry.name for entry in shipped()]


def load_recipe(recipe: str | os.PathLike, overrides: Overrides = ()) -> Recipe:
    """A recipe file or a shipped recipe's name, validated, with ``overrides`` applied in order:
    ``{"objectives.1.weight": 0.3, "budget": {"steps": 20}}``, or ``["optim.lr=1e-4"]`` as ``--set`` takes."""
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = [_override(item) for item in _items(overrides, "overrides", "a mapping or a list of overrides")]
    return load_recipe_file(_path(recipe, "recipe", "a recipe file or a shipped recipe's name"), pairs, "override")


def build_model(recipe: Recipe | str | os.PathLike, encoder: Encoder | None = None) -> ProtJEPA:
    """The recipe's encoder (or ``encoder``) and objectives, untrained; ``recipe``: a Recipe, a recipe file
    or a shipped recipe's name."""
    if encoder is not None and not isinstance(encoder, Encoder):
        raise ArgumentError(f"encoder: expected a protjepa Encoder or None, got {type(encoder).__name__}")
    return build_recipe_model(_recipe(recipe), encoder)


def train(recipe: Recipe | str | os.PathLike, run_dir: str | os.PathLike | None = None, *,
          data_root: str | os.PathLike | None = None, callbacks: Sequence = (), loggers: Sequence = (),
          resume: str | os.PathLike | None = None, console: bool = True):
    """Train under the recipe's budget and write the run folder (default: the recipe's ``train.run_dir``).
    ``resume``: a checkpoint to continue from, or ``"latest"``: the run already in ``run_dir``; without it,
    ``run_dir`` must not hold another run's records.

    ``callbacks`` and ``loggers`` are Composer callbacks and loggers, added to the recipe's own
    (``train.callbacks``, ``train.loggers``). Returns the run's result: ``run_dir``, ``summary`` (final
    losses and monitors), ``checkpoints``, ``export_dir``. Needs the ``train`` extra.
    """
    from protjepa.recipe import zero_weight_notes
    from protjepa.training.trainer import train as train_run

    recipe = _recipe(recipe)
    run_dir = _path(run_dir, "run_dir", "a folder", optional=True)
    run_dir = Path(run_dir) if run_dir is not None else Path(recipe.train.run_dir.format(name=recipe.name))
    data_root = _path(data_root, "data_root", "a folder", optional=True)
    return train_run(recipe, run_dir, data_root=None if data_root is None else str(data_root),
                     resume=_path(resume, "resume", "a checkpoint file", optional=True),
                     callbacks=tuple(_items(callbacks, "callbacks")), loggers=tuple(_items(loggers, "loggers")),
                     console=console, notes=tuple(zero_weight_notes(recipe)))


def load_encoder(path: str | os.PathLike, *, trust_code: bool = False) -> Encoder:
    """An encoder from an export folder, a fair-esm ``.pt``, a Hugging Face ESM folder, a run folder
    (its export) or one of a run's training checkpoints (``runs/demo/checkpoints/ckpt-0.500.pt``).
    These are data: an ``encoder.yaml`` or a run's recipe naming code to import (``_component_``,
    ``plugins``) is refused unless ``trust_code=True`` (as transformers' ``trust_remote_code``)."""
    return load_encoder_path(_path(path, "path", "an encoder file or folder, or a run folder"), _trust(trust_code))


def embed(encoder: Encoder | str | os.PathLike, sequences: Sequence[str], *, layer: int | str = "last",
          per_residue: bool = False, device: str | None = None, batch_tokens: int | None = None,
          trust_code: bool = False) -> np.ndarray | list[np.ndarray]:
    """Embeddings of ``sequences`` at ``layer`` (``last``, ``half``, or a depth; 0 = the token embeddings):
    ``[N, width]`` float32 means over each sequence's residues, or with ``per_residue`` one
    ``[length, width]`` array per sequence. ``encoder``: an Encoder or anything :func:`load_encoder` takes
    (``trust_code`` as it takes it)."""
    sequences = _items(sequences, "sequences")
    embedder = Embedder(_encoder(encoder, trust_code), layer, device=device, batch_tokens=batch_tokens, cache_dir=None,
                        progress=False)
    if per_residue:
        return [np.asarray(rows, dtype=np.float32) for rows in embedder.per_residue(sequences)]
    return embedder.pooled(sequences)


def probe(encoder: Encoder | str | os.PathLike, tasks: Sequence[str] | None = None, *,
          data_root: str | os.PathLike | None = None, specs: Sequence[str | os.PathLike] = (),
          layer: int | str = "last", fast: bool = False, corpus: Sequence[str | os.PathLike] | None = None,
          out: str | os.PathLike | None = None, device: str | None = None, log=print, trust_code: bool = False,
          **caps: Any) -> dict:
    """Score a frozen encoder on probe tasks (default: the default suite; ``protjepa probe --list``).

    ``specs``: your own task spec files or folders; ``corpus``: pretraining FASTA files for the
    leakage check; ``caps``: ``max_train``, ``max_test``, ``max_records``, ``seed``, ``drop_leaked``,
    ``drop_identity``; ``trust_code``: as :func:`load_encoder` takes it, for an encoder given as a path.
    Returns the results (``results["tasks"][name]["value"]``), also written to ``out`` when given.
    """
    unknown = sorted(set(caps) - set(CAPS))
    if unknown:
        raise ArgumentError(f"{', '.join(unknown)}: no such probe setting (the caps are {', '.join(CAPS)})")
    if not callable(log):
        raise ArgumentError(f"log: expected a function of one line of text, got {type(log).__name__}")
    names = None if tasks is None else _items(tasks, "tasks")
    for i, name in enumerate(names or []):
        if not isinstance(name, str):
            raise ArgumentError(f"tasks[{i}]: expected a task name, got {type(name).__name__}")
    settings = SuiteSettings(fast=fast, **caps)  # checked before anything loads
    registry = task_registry([_path(s, f"specs[{i}]", "a task spec file or folder")
                              for i, s in enumerate(_items(specs, "specs"))])
    specs_run = registry.select(names or None)
    files = None if corpus is None else [_path(f, f"corpus[{i}]", "a FASTA file")
                                         for i, f in enumerate(_items(corpus, "corpus"))]
    out = _path(out, "out", "a folder", optional=True)
    root = find_data_root(_path(data_root, "data_root", "a folder", optional=True))
    embedder = Embedder(_encoder(encoder, trust_code), layer, device=device, cache_dir=None, progress=False)
    results, examples = run_probe_suite(specs_run, embedder, root, settings, Corpus(files) if files else None,
                                        log=log)
    if out is not None:
        write_results(results, out, examples)
    return results


def compare(a: dict | str | os.PathLike, b: dict | str | os.PathLike, *, tie: float = DEFAULT_TIE,
            name_a: str = "A", name_b: str = "B") -> Comparison:
    """Task-by-task wins, losses and ties of ``a`` against ``b`` (probe results, or their files or run
    folders), with the sign test: ``.count("W")``, ``.p_value``, ``.rows``."""
    for name, label in (("name_a", name_a), ("name_b", name_b)):
        if not isinstance(label, str):
            raise ArgumentError(f"{name}: expected a label (a string), got {type(label).__name__}")
    comparison = compare_results(_results(a, "a"), _results(b, "b"), tie, name_a, name_b)
    return check_comparable(comparison, name_a, name_b)


def compare_seeds(candidates: str | os.PathLike | Sequence[str | os.PathLike], baseline: str | os.PathLike, *,
                  tie: float = DEFAULT_TIE) -> FamilyStatistics:
    """Each candidate (a folder of ``seed<k>/`` runs, as an experiment writes a variant, or one probe
    result) against ``baseline`` over seeds, as ``protjepa compare`` and the experiment report judge
    them: the per-task rule, the tests over tasks and the verdict, the candidates one family (Holm).
    ``result.comparisons["masked"].verdict``, ``.rows`` (per task), ``.across`` (over tasks)."""
    paths = [_path(c, f"candidates[{i}]", "a folder of seed runs or a probe result")
             for i, c in enumerate(_items(candidates, "candidates"))]
    variants = [load_seeds(p) for p in [*paths, _path(baseline, "baseline", "a folder of seed runs or a probe result")]]
    if len({v.name for v in variants}) < len(variants):
        for i, v in enumerate(variants):
            v.name = f"{v.name} ({i})"
    *arms, base = variants
    return family_statistics({v.name: v for v in variants}, {v.name: base.name for v in arms}, tie)


# --------------------------------------------------------------------------- arguments


def _items(value: Any, name: str, what: str = "a list") -> list:
    """``value`` as a list: a string or a path is one item (not its letters); else any iterable but a mapping."""
    if isinstance(value, (str, os.PathLike)):
        return [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise ArgumentError(f"{name}: expected {what}, got {type(value).__name__}")
    return list(value)


def _path(value: Any, name: str, what: str, optional: bool = False) -> str | os.PathLike | None:
    if (value is None and optional) or isinstance(value, (str, os.PathLike)):
        return value
    raise ArgumentError(f"{name}: expected {what}{' or None' if optional else ''}, got {type(value).__name__}")


def _override(item: Any) -> tuple[str, Any]:
    """One override: ``"KEY.PATH=VALUE"`` as ``--set`` takes it, or a (key path, value) pair."""
    if isinstance(item, str):
        return parse_assignment(item)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise ArgumentError(f"overrides: {item!r} is neither 'KEY.PATH=VALUE' nor a (key path, value) pair")


def _recipe(value: Any) -> Recipe:
    """A Recipe as given, or loaded from a file or a shipped recipe's name."""
    return value if isinstance(value, Recipe) else load_recipe(
        _path(value, "recipe", "a Recipe, a recipe file or a shipped recipe's name"))


def _encoder(value: Any, trust_code: bool) -> Encoder:
    """An Encoder as given, or loaded from anything :func:`load_encoder` takes."""
    return value if isinstance(value, Encoder) else load_encoder_path(
        _path(value, "encoder", "an Encoder, or an encoder file or folder, or a run folder"), _trust(trust_code))


def _trust(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"trust_code: expected True or False, got {type(value).__name__}")
    return value


def _results(value: Any, name: str) -> dict:
    """Probe results as given (checked), or read from a file, a probe folder or a run folder."""
    if isinstance(value, dict):
        check_results(value, name)
        return value
    return load_results(_path(value, name, "probe results (a dict), a results.json, or a probe or run folder"))
