"""After a run: the loss and collapse curves as a PNG, and a summary."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402


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


def _plot_series(ax, train: list[dict], monitor: list[dict], key: str, colour: str, label: str) -> None:
    """``key`` over the steps: solid on the training records, dashed on the held-out ones (``val/<key>``)."""
    for prefix, records, style in (("", train, "-"), ("val/", monitor, "--.")):
        points = [(r["step"], r[prefix + key]) for r in records if prefix + key in r]
        if points:
            ax.plot(*zip(*points), colour + style, label=f"{label} ({'held-out' if prefix else 'train'})")


def _plot_regularizer(ax, train: list[dict], monitor: list[dict], rid: str) -> None:
    """The regulariser's statistic (log scale) and the per-dimension std of its input, which
    should settle near 1 (N(0, 1) rows) rather than shrink towards 0."""
    _plot_series(ax, train, monitor, f"{rid}/loss", "C3", "statistic")
    ax.set(xlabel="step", ylabel="statistic", yscale="log", title=f"anti-collapse: {rid}")
    std_axis = ax.twinx()
    _plot_series(std_axis, train, monitor, f"{rid}/std", "C2", "input std")
    std_axis.axhline(1.0, color="C2", lw=0.5, ls=":")
    std_axis.set_ylabel("per-dim std of its input")
    handles = ax.get_legend_handles_labels()[0] + std_axis.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="x-small", loc="center right")


def _latent_ids(records: list[dict]) -> list[str]:
    """Objectives that log a latent score beside the constant's (``<id>/cosine_of_mean``)."""
    keys = {k.removeprefix("val/") for r in records for k in r}
    return sorted(k.removesuffix("/cosine_of_mean") for k in keys if k.endswith("/cosine_of_mean"))


def _plot_latent(ax, train: list[dict], monitor: list[dict], lid: str) -> None:
    """The latent term's cosine beside the mean target's (the best constant): the gap is the lift;
    r2 on its own axis where the loss has one."""
    _plot_series(ax, train, monitor, f"{lid}/cosine", "C0", "cosine")
    _plot_series(ax, train, monitor, f"{lid}/cosine_of_mean", "C7", "mean target's cosine")
    ax.set(xlabel="step", ylabel="cosine", title=f"latent term: {lid} (lift = the gap)")
    handles = ax.get_legend_handles_labels()[0]
    if any(f"{lid}/r2" in r for r in train) or any(f"val/{lid}/r2" in r for r in monitor):
        r2_axis = ax.twinx()
        _plot_series(r2_axis, train, monitor, f"{lid}/r2", "C1", "r2")
        r2_axis.axhline(0.0, color="C1", lw=0.5, ls=":")
        r2_axis.set_ylabel("r2 (0: the mean target)")
        handles += r2_axis.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="x-small", loc="lower right")


def plot_curves(records: list[dict], path: Path, title: str = "") -> None:
    """One panel per loss (the total, then each objective's; solid: training, dashed: the
    held-out batch), since their scales differ; then the collapse monitors, one panel per
    latent term with its cosine beside the best constant's, and one panel per anti-collapse
    regulariser with its statistic beside the std of its input."""
    train = [r for r in records if r["kind"] == "train"]
    monitor = [r for r in records if r["kind"] == "monitor"]
    keys = _loss_keys(train) or _loss_keys([{k.removeprefix("val/"): v for k, v in r.items()} for r in monitor])
    latents = _latent_ids(records)
    regularizers = _regularizer_ids(records)
    panel_count = len(keys) + 1 + len(latents) + len(regularizers)
    columns = min(panel_count, 3)
    rows = -(-panel_count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False)
    panels = list(axes.flat)
    for ax, key in zip(panels, keys):
        for kind, points, style in (("train", [(r["step"], r[key]) for r in train if key in r], "-"),
                                    ("held-out", [(r["step"], r[f"val/{key}"]) for r in monitor if f"val/{key}" in r],
                                     "--.")):
            if points:
                ax.plot(*zip(*points), style, label=kind)
        ax.set(xlabel="step", title=key)
        ax.legend(fontsize="small")
    collapse = panels[len(keys)]
    if monitor:
        steps = [r["step"] for r in monitor]
        collapse.plot(steps, [r["monitor/effective_rank"] for r in monitor], "C0.-", label="effective rank")
        collapse.set(xlabel="step", ylabel="effective rank", title="collapse monitors (held-out batch)")
        std_axis = collapse.twinx()
        std_axis.plot(steps, [r["monitor/embed_std"] for r in monitor], "C1.-", label="embedding std")
        std_axis.set_ylabel("per-dim std, normalised embeddings")
        handles = collapse.get_legend_handles_labels()[0] + std_axis.get_legend_handles_labels()[0]
        collapse.legend(handles=handles, fontsize="small")
    for ax, lid in zip(panels[len(keys) + 1:], latents):
        _plot_latent(ax, train, monitor, lid)
    for ax, rid in zip(panels[len(keys) + 1 + len(latents):], regularizers):
        _plot_regularizer(ax, train, monitor, rid)
    for ax in panels[panel_count:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize_run(records: list[dict], latent_scores: dict[str, str] | None = None) -> dict:
    """Steps, tokens, model FLOPs (None: not counted), training-clock seconds, the run's tokens/s,
    the last logged values, and ``latent_scores`` (objective id -> the metric saying whether its
    latent term beats a constant: ``ProtJEPA.latent_scores``)."""
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
        summary["latent_scores"] = dict(latent_scores)
    return summary


def held_out_latent(summary: dict) -> dict[str, dict]:
    """Per latent term (objective id): its score's name and, on the held-out batch at the end,
    ``score`` (that metric's value), ``cosine``, ``cosine_of_mean``, ``lift`` and ``r2`` where logged."""
    end = summary.get("monitor_end", {})
    out = {}
    for id, metric in summary.get("latent_scores", {}).items():
        values = {k: end[f"val/{id}/{k}"] for k in ("cosine", "cosine_of_mean", "lift", "r2") if f"val/{id}/{k}" in end}
        if metric in values:
            out[id] = {"metric": metric, "score": values[metric], **values}
    return out


def held_out_mlm(summary: dict) -> dict[str, tuple[float, float | None]]:
    """Per MLM objective (id; those logging a perplexity): (held-out loss, the unigram entropy of the
    same residues, None in runs made before it was logged) at the end."""
    end = summary.get("monitor_end", {})
    ids = [k[len("val/"):-len("/perplexity")] for k in end if k.endswith("/perplexity")]
    return {id: (end[f"val/{id}/loss"], end.get(f"val/{id}/unigram_entropy")) for id in ids if f"val/{id}/loss" in end}


def latent_text(id: str, held: dict) -> str:
    """``jepa: lift +0.061 (cosine 0.612, the mean target's 0.551)``, with r2 where logged."""
    text = f"{id}: lift {held['lift']:+.3f} (cosine {held['cosine']:.3f}, the mean target's {held['cosine_of_mean']:.3f})"
    return text + (f", r2 {held['r2']:+.3f}" if "r2" in held else "")


def yardstick_lines(summary: dict) -> list[str]:
    """How to read the run: each held-out loss and latent score beside its constant prediction's,
    and a warning for a latent term that predicts no better than that constant."""
    lines = [f"held-out MLM loss ({id}) {loss:.3f} nats; a constant prediction (the residues' unigram entropy) "
             f"scores {entropy:.3f}" for id, (loss, entropy) in held_out_mlm(summary).items() if entropy is not None]
    for id, held in held_out_latent(summary).items():
        lines.append(f"held-out latent term {latent_text(id, held)}; {held['metric']} > 0 beats the constant")
        if held["score"] <= 0:
            lines.append(f"warning: the latent term {id} predicts the held-out targets no better than a constant "
                         f"(the mean target): {held['metric']} {held['score']:+.3f}, cosine {held['cosine']:.3f} "
                         f"against the mean target's {held['cosine_of_mean']:.3f}")
    return lines


def rank_warning(summary: dict) -> str | None:
    """A warning line when the held-out effective rank ended below half its start. MLM alone
    also loses rank early and recovers, so the line asks for the comparison that decides."""
    start = summary.get("monitor_start", {}).get("monitor/effective_rank")
    end = summary.get("monitor_end", {}).get("monitor/effective_rank")
    if start is None or end is None or end >= start / 2:
        return None
    return (f"warning: held-out effective rank fell below half its start ({start:.2f} -> {end:.2f}): "
            "possible collapse; compare with an MLM-only run under the same budget")


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
