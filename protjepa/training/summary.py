"""After a run: the loss and collapse curves as a PNG, and a summary."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, ScalarFormatter  # noqa: E402

from protjepa.objectives.base import LATENT_SCORES, LatentScore, latent_text  # noqa: E402


def read_records(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _loss_keys(records: list[dict]) -> list[str]:
    keys = {k for r in records for k in r if k == "loss" or k.endswith("/loss")}
    return sorted(keys, key=lambda k: (k != "loss", k))


def _regularizer_ids(records: list[dict]) -> list[str]:
    """Objectives that log both a statistic (``<id>/loss``) and the std of their input (``<id>/std``)."""
    keys = {k.removeprefix("val/") for r in records for k in r}
    return sorted(k.removesuffix("/std") for k in keys if k.endswith("/std") and k.replace("/std", "/loss") in keys)


# The x axis of the curves: a budget's own unit, so that runs matched on it end at the same x.
X_AXES = {"steps": ("step", "step"), "tokens": ("tokens", "tokens (non-padding)"),
          "wall_clock": ("seconds", "training clock (s)"), "flops": ("flops", "model FLOPs")}
SHORT = 30  # a series of at most this many points gets a marker on each (one point draws no line)


def plain_ticks(ax, x_unit: str) -> None:
    """Tick labels without a shared offset or exponent in the corner: engineering prefixes (2.5M, 40T) on
    a token or FLOP axis, plain numbers on linear value axes (log axes keep theirs)."""
    ax.xaxis.set_major_formatter(EngFormatter(sep="") if x_unit in ("tokens", "flops")
                                 else ScalarFormatter(useOffset=False))
    if ax.get_yscale() == "linear":
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))


def line_style(points: list, style: str) -> dict:
    """Keyword arguments of one plotted series: its line style, and a marker on each point of a short one."""
    return {"linestyle": style, "marker": "o" if len(points) <= SHORT else None, "markersize": 3}


def _points(records: list[dict], x: str, key: str) -> list[tuple[float, float]]:
    return [(r[x], r[key]) for r in records if key in r and r.get(x) is not None]


def _plot_series(ax, train: list[dict], monitor: list[dict], key: str, colour: str, label: str, x: str) -> None:
    """``key`` against ``x``: solid on the training records, dashed on the held-out ones (``val/<key>``)."""
    for prefix, records, style in (("", train, "-"), ("val/", monitor, "--")):
        points = _points(records, x, prefix + key)
        if points:
            ax.plot(*zip(*points), color=colour, label=f"{label} ({'held-out' if prefix else 'train'})",
                    **line_style(points, style))


def _plot_regularizer(ax, train: list[dict], monitor: list[dict], rid: str, x: str) -> None:
    """The regulariser's statistic (log scale) and the per-dimension std of its input, which
    should settle near 1 (N(0, 1) rows) rather than shrink towards 0."""
    _plot_series(ax, train, monitor, f"{rid}/loss", "C3", "statistic", x)
    ax.set(ylabel="statistic", yscale="log", title=f"anti-collapse: {rid}")
    std_axis = ax.twinx()
    _plot_series(std_axis, train, monitor, f"{rid}/std", "C2", "input std", x)
    std_axis.axhline(1.0, color="C2", lw=0.5, ls=":")
    std_axis.set_ylabel("per-dim std of its input")
    plain_ticks(std_axis, "")
    handles = ax.get_legend_handles_labels()[0] + std_axis.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="x-small", loc="center right")


def _plot_latent(ax, train: list[dict], monitor: list[dict], lid: str, score: LatentScore, x: str) -> None:
    """The latent term's score beside the best constant's (a dotted line); where it logs them, its cosine
    and the mean target's on a second axis (their gap is the lift)."""
    _plot_series(ax, train, monitor, f"{lid}/{score.metric}", "C0", score.metric, x)
    ax.axhline(score.constant, color="C0", lw=0.8, ls=":", label=f"the best constant ({score.constant:g})")
    ax.set(ylabel=score.metric, title=f"latent term: {lid} ({score.metric} > {score.constant:g} beats a constant)")
    handles = ax.get_legend_handles_labels()[0]
    logged = {k.removeprefix("val/") for r in train + monitor for k in r}
    if score.metric != "cosine" and {f"{lid}/cosine", f"{lid}/cosine_of_mean"} <= logged:
        cosine_axis = ax.twinx()
        _plot_series(cosine_axis, train, monitor, f"{lid}/cosine", "C1", "cosine", x)
        _plot_series(cosine_axis, train, monitor, f"{lid}/cosine_of_mean", "C7", "mean target's cosine", x)
        cosine_axis.set_ylabel("cosine")
        plain_ticks(cosine_axis, "")
        handles += cosine_axis.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="x-small", loc="lower right")


def _plot_collapse(ax, monitor: list[dict], x: str) -> None:
    """The effective rank (solid, circles) and the embedding std (dashed, squares, its own axis) on the
    held-out batch: two series told apart by line, marker and colour, each axis labelled in its colour."""
    where = [r[x] for r in monitor]
    ax.plot(where, [r["monitor/effective_rank"] for r in monitor], color="C0", linestyle="-", marker="o",
            markersize=4, label="effective rank")
    ax.set_ylabel("effective rank", color="C0")
    ax.set_title("collapse monitors (held-out batch)")
    std_axis = ax.twinx()
    std_axis.plot(where, [r["monitor/embed_std"] for r in monitor], color="C1", linestyle="--", marker="s",
                  markersize=4, label="embedding std")
    std_axis.set_ylabel("per-dim std, normalised embeddings", color="C1")
    plain_ticks(std_axis, "")
    handles = ax.get_legend_handles_labels()[0] + std_axis.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small")


def plot_curves(records: list[dict], path: Path, title: str = "", latent: dict[str, LatentScore] | None = None,
                x_unit: str = "steps") -> None:
    """One panel per loss (the total, then each objective's; solid: training, dashed: the
    held-out batch), since their scales differ; then the collapse monitors, one panel per
    ``latent`` term (objective id -> its score) with its score beside the best constant's, and one
    panel per anti-collapse regulariser with its statistic beside the std of its input. The x axis is
    ``x_unit``, the budget's unit (:data:`X_AXES`)."""
    x, x_label = X_AXES[x_unit]
    train = [r for r in records if r["kind"] == "train"]
    monitor = [r for r in records if r["kind"] == "monitor"]
    keys = _loss_keys(train) or _loss_keys([{k.removeprefix("val/"): v for k, v in r.items()} for r in monitor])
    latent = latent or {}
    regularizers = _regularizer_ids(records)
    panel_count = len(keys) + 1 + len(latent) + len(regularizers)
    columns = min(panel_count, 3)
    rows = -(-panel_count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False)
    panels = list(axes.flat)
    for ax, key in zip(panels, keys):
        for kind, chosen, prefix, style in (("train", train, "", "-"), ("held-out", monitor, "val/", "--")):
            points = _points(chosen, x, prefix + key)
            if points:
                ax.plot(*zip(*points), label=kind, **line_style(points, style))
        ax.set(title=key)
        ax.legend(fontsize="small")
    if monitor:
        _plot_collapse(panels[len(keys)], monitor, x)
    for ax, (lid, score) in zip(panels[len(keys) + 1:], latent.items()):
        _plot_latent(ax, train, monitor, lid, score, x)
    for ax, rid in zip(panels[len(keys) + 1 + len(latent):], regularizers):
        _plot_regularizer(ax, train, monitor, rid, x)
    for ax in panels[:panel_count]:
        ax.set_xlabel(x_label)
        plain_ticks(ax, x_unit)
    for ax in panels[panel_count:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize_run(records: list[dict], latent_scores: dict[str, LatentScore] | None = None,
                  objectives: dict[str, str] | None = None, precision: str | None = None) -> dict:
    """Steps, tokens, model FLOPs (None: not counted), training-clock seconds, the run's tokens/s,
    the last logged values, ``latent_scores`` (latent objective id -> its metric and the constant it is
    compared to: ``ProtJEPA.latent_scores``), ``objectives`` (id -> registered name) and the
    ``precision`` it trained in (bf16 or fp32)."""
    last = records[-1]
    train = [r for r in records if r["kind"] == "train"]
    monitor = [r for r in records if r["kind"] == "monitor"]
    first_train = train[0] if train else last
    summary = {
        "steps": last["step"],
        "tokens": last["tokens"],
        "flops": last.get("flops"),  # absent from the records of runs made before FLOPs were counted
        "train_seconds": last["seconds"],
        "tokens_per_s": last["tokens"] / last["seconds"] if last["seconds"] else 0.0,
    }
    if train:
        summary["padding_fraction"] = sum(r["padding_fraction"] for r in train) / len(train)
        summary["first"] = {k: first_train[k] for k in _loss_keys(train) if k in first_train}
        summary["final"] = {k: v for k, v in train[-1].items() if k == "loss" or "/" in k}
    if monitor:
        summary["monitor_start"] = {k: v for k, v in monitor[0].items() if k.startswith("monitor/")}
        summary["monitor_end"] = {k: v for k, v in monitor[-1].items() if "/" in k}
    if latent_scores:
        summary["latent_scores"] = {id: score._asdict() for id, score in latent_scores.items()}
    if objectives:
        summary["objectives"] = dict(objectives)
    if precision:
        summary["precision"] = precision
    return summary


def declared_latent(summary: dict) -> dict[str, LatentScore]:
    """The run's latent objectives and their scores, as its summary recorded them (a run made before the
    constant was recorded gave the metric's name alone: lift or r2, whose constant is 0)."""
    return {id: LatentScore(value) if isinstance(value, str) else LatentScore(**value)
            for id, value in summary.get("latent_scores", {}).items()}


def held_out_latent(summary: dict) -> dict[str, dict]:
    """Per latent term (objective id): its score's ``metric`` and ``constant`` and, on the held-out batch at
    the end, ``score`` (that metric's value; None when it was not logged) beside whichever of
    ``cosine``, ``cosine_of_mean``, ``lift`` and ``r2`` were logged."""
    end = summary.get("monitor_end", {})
    out = {}
    for id, score in declared_latent(summary).items():
        values = {k: end[f"val/{id}/{k}"] for k in dict.fromkeys((*LATENT_SCORES, score.metric))
                  if f"val/{id}/{k}" in end}
        out[id] = {**values, "metric": score.metric, "constant": score.constant, "score": values.get(score.metric)}
    return out


def held_out_mlm(summary: dict) -> dict[str, tuple[float, float | None]]:
    """Per MLM objective (id; those logging a perplexity): (held-out loss, the unigram entropy of the
    same residues, None in runs made before it was logged) at the end."""
    end = summary.get("monitor_end", {})
    ids = [k[len("val/"):-len("/perplexity")] for k in end if k.endswith("/perplexity")]
    return {id: (end[f"val/{id}/loss"], end.get(f"val/{id}/unigram_entropy")) for id in ids if f"val/{id}/loss" in end}


def yardstick_lines(summary: dict) -> list[str]:
    """How to read the run: each held-out loss and latent score beside its constant prediction's, a
    warning for a latent term that predicts no better than that constant, and a line for one whose
    score was not logged."""
    lines = [f"held-out MLM loss ({id}) {loss:.3f} nats; a constant prediction (the residues' unigram entropy) "
             f"scores {entropy:.3f}" for id, (loss, entropy) in held_out_mlm(summary).items() if entropy is not None]
    for id, held in held_out_latent(summary).items():
        score = LatentScore(held["metric"], held["constant"])
        if held["score"] is None:
            lines.append(f"held-out latent term {id}: its score {score.metric} was not logged on the held-out batch "
                         f"(no val/{id}/{score.metric}): whether it beats a constant is not known")
            continue
        lines.append(f"held-out latent term {id}: {latent_text(score, held)}; {score.metric} > {score.constant:g} "
                     "beats the constant")
        if held["score"] <= score.constant:
            lines.append(f"warning: the latent term {id} predicts the held-out targets no better than the best "
                         f"constant ({score.metric} {score.constant:g}): {latent_text(score, held)}")
    return lines


def mlm_only(summary: dict) -> bool | None:
    """Whether every objective of the run is MLM; None for a run made before its objectives were recorded."""
    objectives = summary.get("objectives")
    return None if not objectives else set(objectives.values()) == {"mlm"}


def rank_warning(summary: dict) -> str | None:
    """A warning line when the held-out effective rank ended below half its start. MLM alone
    also loses rank early and recovers, so the line asks for the comparison that decides: an
    MLM-only run under the same budget, or (for an MLM-only run) a longer budget."""
    start = summary.get("monitor_start", {}).get("monitor/effective_rank")
    end = summary.get("monitor_end", {}).get("monitor/effective_rank")
    if start is None or end is None or end >= start / 2:
        return None
    advice = ("MLM alone also loses rank early and often recovers: see whether it recovers under a longer budget"
              if mlm_only(summary) else "compare with an MLM-only run under the same budget")
    return (f"warning: held-out effective rank fell below half its start ({start:.2f} -> {end:.2f}): possible "
            f"collapse; {advice}")


def format_summary(summary: dict, run_dir: Path, notes: list[str] = ()) -> str:
    flops = summary.get("flops")
    lines = [
        f"run directory: {run_dir}",
        f"steps {summary['steps']} | {summary['tokens']:,} non-padding tokens | "
        + (f"{flops:.3g} model FLOPs | " if flops is not None else "model FLOPs not counted | ")
        + f"{summary['train_seconds']:.1f} s of training clock | {summary['tokens_per_s']:,.0f} tokens/s",
    ]
    if "final" in summary:
        lines[-1] += f" | padding {100 * summary['padding_fraction']:.1f}% of batch tokens"
        first = summary["first"]
        lines.append("final training losses (mean of the last log interval):")
        lines += [f"  {k:<28} {v:.4f}" + (f"  (first {first[k]:.4f})" if k in first else "")
                  for k, v in summary["final"].items()]
    if "monitor_end" in summary:
        start = summary["monitor_start"]
        lines.append("held-out batch (collapse monitors and losses):")
        lines += [f"  {k:<28} {v:.4f}" + (f"  (at start {start[k]:.4f})" if k in start else "")
                  for k, v in summary["monitor_end"].items()]
        lines += yardstick_lines(summary)
        warning = rank_warning(summary)
        if warning:
            lines.append(warning)
    lines += list(notes)
    return "\n".join(lines)
