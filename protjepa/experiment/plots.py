"""The report's PNGs: loss curves and collapse monitors against training-clock seconds
(the budget's own axis, so matched runs end at the same x), and per-task deltas.

One colour per variant, one line style per seed.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from protjepa.evaluation.family import plot_family  # noqa: E402
from protjepa.evaluation.verdicts import ArmComparison  # noqa: E402
from protjepa.experiment.records import HELD_OUT_MLM, RunData  # noqa: E402
from protjepa.experiment.spec import Experiment  # noqa: E402

SEED_STYLES = ("-", "--", ":", "-.")


def _colour(experiment: Experiment, variant: str) -> str:
    """One colour a variant in every plot; grey for anything else (the base of a continued run)."""
    names = [v.name for v in experiment.variants]
    return f"C{names.index(variant) % 10}" if variant in names else "#555555"


def _style(run: RunData, experiment: Experiment) -> dict:
    seeds = experiment.variant(run.plan.variant).seeds
    return {"color": _colour(experiment, run.plan.variant),
            "linestyle": SEED_STYLES[seeds.index(run.plan.seed) % len(SEED_STYLES)],
            "label": run.plan.label}


def _curve(records: list[dict], kind: str, key: str) -> tuple[list[float], list[float]]:
    points = [(r["seconds"], r[key]) for r in records if r["kind"] == kind and key in r]
    return ([p[0] for p in points], [p[1] for p in points]) if points else ([], [])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(runs: list[RunData], experiment: Experiment, path: Path) -> Path | None:
    """Training loss (left) and held-out MLM loss (right, the one term every MLM variant shares)."""
    if not any(r.records for r in runs):
        return None
    fig, (train, held_out) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        style = _style(run, experiment)
        train.plot(*_curve(run.records, "train", "loss"), **style)
        x, y = _curve(run.records, "monitor", HELD_OUT_MLM)
        if x:
            held_out.plot(x, y, marker=".", **style)
    train.set(xlabel="training clock (s)", ylabel="loss", yscale="log", title="training loss (each recipe's own total)")
    held_out.set(xlabel="training clock (s)", ylabel="cross-entropy", title="held-out MLM loss (fixed batch)")
    for ax in (train, held_out):
        ax.legend(fontsize="x-small")
    return _save(fig, path)


def plot_collapse(runs: list[RunData], experiment: Experiment, path: Path) -> Path | None:
    if not any(r.records for r in runs):
        return None
    fig, (rank, std) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        style = _style(run, experiment)
        rank.plot(*_curve(run.records, "monitor", "monitor/effective_rank"), marker=".", **style)
        std.plot(*_curve(run.records, "monitor", "monitor/embed_std"), marker=".", **style)
    rank.set(xlabel="training clock (s)", ylabel="effective rank", title="effective rank of mean embeddings")
    std.set(xlabel="training clock (s)", ylabel="std", title="per-dimension std of normalised embeddings")
    for ax in (rank, std):
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="x-small")
    return _save(fig, path)


def plot_deltas(seeded: dict[str, ArmComparison], experiment: Experiment, path: Path,
                title: str = "per-task deltas to the baseline") -> Path:
    """Per task, each variant's delta to its baseline (:func:`~protjepa.evaluation.family.plot_family`),
    each variant in its colour."""
    return plot_family(seeded, path, title, {name: _colour(experiment, name) for name in seeded})
