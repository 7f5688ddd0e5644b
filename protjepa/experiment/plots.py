"""The report's PNGs: loss curves and collapse monitors against the budget's own unit (training-clock
seconds, tokens, steps or model FLOPs, so matched runs end at the same x), and per-task deltas.

One colour per variant, one line style per seed; a marker on every point of a short series.
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
from protjepa.training.budget import Budget  # noqa: E402
from protjepa.training.summary import X_AXES, line_style, plain_ticks  # noqa: E402

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


def _plot(ax, records: list[dict], kind: str, key: str, x: str, style: dict) -> None:
    """``key`` of the ``kind`` records against ``x``, in the run's ``style`` (a marker on each point of a short series)."""
    points = [(r[x], r[key]) for r in records if r["kind"] == kind and key in r and r.get(x) is not None]
    if points:
        ax.plot(*zip(*points), **{**style, **line_style(points, style["linestyle"])})


def _x_axis(experiment: Experiment) -> tuple[str, str, str]:
    """(the budget's unit, the record key that measures it, the axis label): the x of every curve."""
    unit = Budget.from_config(experiment.spec.budget).unit
    return (unit, *X_AXES[unit])


def _finish(axes, unit: str, label: str) -> None:
    for ax in axes:
        ax.set_xlabel(label)
        plain_ticks(ax, unit)
        ax.legend(fontsize="x-small")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(runs: list[RunData], experiment: Experiment, path: Path) -> Path | None:
    """Training loss (left) and held-out MLM loss (right, the one term every MLM variant shares)."""
    if not any(r.records for r in runs):
        return None
    unit, x, label = _x_axis(experiment)
    fig, (train, held_out) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        style = _style(run, experiment)
        _plot(train, run.records, "train", "loss", x, style)
        _plot(held_out, run.records, "monitor", HELD_OUT_MLM, x, style)
    train.set(ylabel="loss", yscale="log", title="training loss (each recipe's own total)")
    held_out.set(ylabel="cross-entropy", title="held-out MLM loss (fixed batch)")
    _finish((train, held_out), unit, label)
    return _save(fig, path)


def plot_collapse(runs: list[RunData], experiment: Experiment, path: Path) -> Path | None:
    if not any(r.records for r in runs):
        return None
    unit, x, label = _x_axis(experiment)
    fig, (rank, std) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        style = _style(run, experiment)
        _plot(rank, run.records, "monitor", "monitor/effective_rank", x, style)
        _plot(std, run.records, "monitor", "monitor/embed_std", x, style)
    rank.set(ylabel="effective rank", title="effective rank of mean embeddings")
    std.set(ylabel="std", title="per-dimension std of normalised embeddings")
    for ax in (rank, std):
        ax.set_ylim(bottom=0)
    _finish((rank, std), unit, label)
    return _save(fig, path)


def plot_deltas(seeded: dict[str, ArmComparison], experiment: Experiment, path: Path,
                title: str = "per-task deltas to the baseline") -> Path:
    """Per task, each variant's delta to its baseline (:func:`~protjepa.evaluation.family.plot_family`),
    each variant in its colour."""
    return plot_family(seeded, path, title, {name: _colour(experiment, name) for name in seeded})
