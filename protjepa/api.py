"""The calls a notebook needs, one import away (``import protjepa``): recipes, models, training,
encoders, embeddings, probes and comparisons. Each is a thin front for the module that does the
work; the command line calls the same modules.

::

    import protjepa
    recipe = protjepa.load_recipe("mlm_jepa_masked", {"budget": {"steps": 20}})
    result = protjepa.train(recipe, "runs/demo")
    encoder = protjepa.load_encoder(result.run_dir)
    vectors = protjepa.embed(encoder, ["MKTAYIAK", "MSEQ"])            # [2, width], mean over residues
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from protjepa.build import build_model
from protjepa.encoders.base import Encoder
from protjepa.evaluation.compare import DEFAULT_TIE, Comparison, load_results
from protjepa.evaluation.compare import compare as compare_results
from protjepa.evaluation.embed import Embedder
from protjepa.evaluation.leakage import Corpus
from protjepa.evaluation.suite import SuiteSettings, run_probe_suite, write_results
from protjepa.evaluation.tasks import task_registry
from protjepa.export import load_encoder
from protjepa.paths import data_root as find_data_root
from protjepa.recipe import Recipe, parse_assignment
from protjepa.recipe import load_recipe as load_recipe_file
from protjepa.shipped import shipped

__all__ = ["load_recipe", "recipes", "build_model", "train", "load_encoder", "embed", "probe", "compare"]

Overrides = Mapping[str, Any] | Sequence[str | tuple[str, Any]]


def recipes() -> list[str]:
    """The names of the shipped recipes and experiment files (``protjepa recipes``)."""
    return [entry.name for entry in shipped()]


def load_recipe(recipe: str | os.PathLike, overrides: Overrides = ()) -> Recipe:
    """A recipe file or a shipped recipe's name, validated, with ``overrides`` applied in order:
    ``{"objectives.1.weight": 0.3, "budget": {"steps": 20}}``, or ``["optim.lr=1e-4"]`` as ``--set`` takes."""
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = [parse_assignment(o) if isinstance(o, str) else tuple(o) for o in overrides]
    return load_recipe_file(recipe, pairs)


def train(recipe: Recipe | str | os.PathLike, run_dir: str | os.PathLike | None = None, *,
          data_root: str | os.PathLike | None = None, callbacks: Sequence = (), loggers: Sequence = (),
          resume: str | os.PathLike | None = None, console: bool = True):
    """Train under the recipe's budget and write the run folder (default: the recipe's ``train.run_dir``).

    ``callbacks`` and ``loggers`` are Composer callbacks and loggers, added to the recipe's own
    (``train.callbacks``, ``train.loggers``). Returns the run's result: ``run_dir``, ``summary`` (final
    losses and monitors), ``checkpoints``, ``export_dir``. Needs the ``train`` extra.
    """
    from protjepa.training.trainer import train as train_run

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    run_dir = Path(run_dir) if run_dir is not None else Path(recipe.train.run_dir.format(name=recipe.name))
    return train_run(recipe, run_dir, data_root=None if data_root is None else str(data_root), resume=resume,
                     callbacks=tuple(callbacks), loggers=tuple(loggers), console=console)


def embed(encoder: Encoder | str | os.PathLike, sequences: Sequence[str], *, layer: int | str = "last",
          per_residue: bool = False, device: str | None = None,
          batch_tokens: int | None = None) -> np.ndarray | list[np.ndarray]:
    """Embeddings of ``sequences`` at ``layer`` (``last``, ``half``, or a depth; 0 = the token embeddings):
    ``[N, width]`` float32 means over each sequence's residues, or with ``per_residue`` one
    ``[length, width]`` array per sequence. ``encoder``: an Encoder or anything :func:`load_encoder` takes."""
    encoder = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
    embedder = Embedder(encoder, layer, device=device, batch_tokens=batch_tokens, cache_dir=None, progress=False)
    if per_residue:
        return [np.asarray(rows, dtype=np.float32) for rows in embedder.per_residue(list(sequences))]
    return embedder.pooled(list(sequences))


def probe(encoder: Encoder | str | os.PathLike, tasks: Sequence[str] | None = None, *,
          data_root: str | os.PathLike | None = None, specs: Sequence[str | os.PathLike] = (),
          layer: int | str = "last", fast: bool = False, corpus: Sequence[str | os.PathLike] | None = None,
          out: str | os.PathLike | None = None, device: str | None = None, log=print, **caps: Any) -> dict:
    """Score a frozen encoder on probe tasks (default: the default suite; ``protjepa probe --list``).

    ``specs``: your own task spec files or folders; ``corpus``: pretraining FASTA files for the
    leakage check; ``caps``: ``max_train``, ``max_test``, ``max_records``, ``seed``, ``drop_leaked``.
    Returns the results (``results["tasks"][name]["value"]``), also written to ``out`` when given.
    """
    encoder = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
    root = find_data_root(data_root)
    specs_run = task_registry([str(s) for s in specs]).select(list(tasks) if tasks else None)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    embedder = Embedder(encoder, layer, device=device, cache_dir=None, progress=False)
    results = run_probe_suite(specs_run, embedder, root, SuiteSettings(fast=fast, **caps),
                              Corpus(list(corpus)) if corpus else None, log=log)
    if out is not None:
        write_results(results, out)
    return results


def compare(a: dict | str | os.PathLike, b: dict | str | os.PathLike, *, tie: float = DEFAULT_TIE,
            name_a: str = "A", name_b: str = "B") -> Comparison:
    """Task-by-task wins, losses and ties of ``a`` against ``b`` (probe results, or their files or run
    folders), with the sign test: ``.count("W")``, ``.p_value``, ``.rows``."""
    a = a if isinstance(a, dict) else load_results(a)
    b = b if isinstance(b, dict) else load_results(b)
    return compare_results(a, b, tie, name_a, name_b)
