"""Whether each variant's latent term learned: the report's latent section, read from its runs.

A latent term is any objective that declares a latent score (``Objective.latent_score``: the
built-in JEPA term and plugins alike, :mod:`protjepa.objectives.base`): a metric, such as ``lift``
or ``r2`` (:func:`protjepa.objectives.base.latent_scores`), and the constant it is compared to. It
learned when that score on held-out masked positions beats the constant in every seed. The scores
come from each run's ``readout.json`` (:mod:`protjepa.evaluation.readout`: 256 held-out sequences,
the same rows for every run) or, for a run not read out, from its last collapse-monitor batch. The
report marks a variant whose latent term did not learn (or whose score was not logged: then it is
not known to have learned) and reads no verdict off it.

A shipped default must also pass three criteria against its baseline (:func:`criteria`): a
score of at least ``LEARNED_BY`` above its constant in every seed, a mean effective rank of at
least ``RANK_RATIO`` x the baseline's, and a mean held-out MLM loss no worse than the baseline's
worst seed.
"""
from __future__ import annotations

from dataclasses import dataclass

from protjepa.experiment.records import RunData
from protjepa.training.summary import held_out_latent, held_out_mlm

LEARNED_BY = 0.05
RANK_RATIO = 0.9


@dataclass
class RunLatent:
    """One finished run's held-out numbers."""

    label: str
    seed: int
    mlm_loss: float | None
    unigram_entropy: float | None
    rank: float | None
    terms: dict[str, dict]  # latent objective id -> metric, constant, score (None: not logged), the latent_scores
    #                          it logged (cosine, cosine_of_mean, lift, r2) and, from a readout, readout_r2
    source: str  # "readout" (readout.json) or "monitor" (the last collapse-monitor batch)


def run_latent(run: RunData) -> RunLatent | None:
    """The run's held-out MLM loss, effective rank and latent scores; None while it is not finished."""
    if run.done is None:
        return None
    summary = run.summary
    rank = summary.get("monitor_end", {}).get("monitor/effective_rank")
    if run.readout is not None:
        mlm = next(iter(run.readout["mlm"].values()), None)
        return RunLatent(run.plan.label, run.plan.seed, mlm and mlm["loss"], mlm and mlm["unigram_entropy"], rank,
                         run.readout["latent"], "readout")
    loss, entropy = next(iter(held_out_mlm(summary).values()), (None, None))
    return RunLatent(run.plan.label, run.plan.seed, loss, entropy, rank, held_out_latent(summary), "monitor")


def constant_of(term: dict) -> float:
    """The constant a latent term's score is compared to (0 in readouts written before it was recorded: lift, r2)."""
    return term.get("constant", 0.0)


@dataclass
class VariantLatent:
    name: str
    baseline: str | None
    runs: list[RunLatent]

    @property
    def has_latent_term(self) -> bool:
        return any(r.terms for r in self.runs)

    @property
    def learned(self) -> bool:
        """Every latent score of every seed logged and above its constant (a variant without a latent term: False)."""
        return self.has_latent_term and all(t["score"] is not None and t["score"] > constant_of(t)
                                            for r in self.runs for t in r.terms.values())

    def mean(self, values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    @property
    def mlm_loss(self) -> float | None:
        return self.mean([r.mlm_loss for r in self.runs])

    @property
    def rank(self) -> float | None:
        return self.mean([r.rank for r in self.runs])


def variant_latents(runs: list[RunData], baselines: dict[str, str | None]) -> dict[str, VariantLatent]:
    """Per variant (in ``baselines``' order: variant -> its baseline), its finished runs' held-out numbers."""
    out = {name: VariantLatent(name, baseline, []) for name, baseline in baselines.items()}
    for run in runs:
        found = run_latent(run)
        if found is not None and run.plan.variant in out:
            out[run.plan.variant].runs.append(found)
    return {name: v for name, v in out.items() if v.runs}


def criteria(variant: VariantLatent, baseline: VariantLatent | None) -> list[str]:
    """The default criteria this variant misses, each with by how much (empty: it meets all three)."""
    missed = []
    for run in variant.runs:
        for id, t in run.terms.items():
            seed, needed = run.label.split("/")[-1], constant_of(t) + LEARNED_BY
            if t["score"] is None:
                missed.append(f"{seed} {id} {t['metric']} not logged")
            elif t["score"] < needed:
                missed.append(f"{seed} {id} {t['metric']} {t['score']:+.3f} < {needed:g}")
    if not variant.has_latent_term:
        missed.append("no latent score logged")
    if baseline is not None and baseline.rank and variant.rank is not None:
        ratio = variant.rank / baseline.rank
        if ratio < RANK_RATIO:
            missed.append(f"effective rank {ratio:.2f} x the baseline's < {RANK_RATIO:g}")
    worst = max((r.mlm_loss for r in baseline.runs if r.mlm_loss is not None), default=None) if baseline else None
    if worst is not None and variant.mlm_loss is not None and variant.mlm_loss > worst:
        missed.append(f"held-out MLM loss {variant.mlm_loss:.4f} > the baseline's worst seed {worst:.4f} "
                      f"(+{variant.mlm_loss - worst:.4f})")
    return missed


def _num(value: float | None, digits: int = 4, sign: bool = False) -> str:
    return "-" if value is None else f"{value:{'+' if sign else ''}.{digits}f}"


def _score_text(term: dict, digits: int = 4) -> str:
    """``lift +0.0612``; ``agreement +0.0712 (constant 0.5)`` for a score whose constant is not 0; ``not logged``."""
    if term["score"] is None:
        return f"{term['metric']} not logged"
    constant = constant_of(term)
    own = f" (constant {constant:g})" if constant else ""
    return f"{term['metric']} {_num(term['score'], digits, sign=True)}{own}"


def latent_section(latents: dict[str, VariantLatent]) -> list[str]:
    """The report's Markdown section: per run, then per variant with the learned mark and the criteria."""
    lines = ["## Latent term against a constant", "",
             "Held-out numbers of each run's final checkpoint. MLM loss: beside the unigram entropy of the same "
             "residues (a constant prediction's loss). Latent score: the metric each latent objective declares, "
             "beside the best constant's score on it: lift = cosine - the mean target's cosine, or r2 for the value "
             "losses, both 0 for the best constant (an objective's own metric: its constant in brackets); above it "
             "the latent term predicts better than one constant vector. Readout R²: ridge maps to the target, fit "
             "on half of the held-out sequences and scored on the other half, from the student state the "
             "predictions are made from (what the student carries), from the predictions (what the predictor "
             "passes on), and from the residue identity alone. "
             "Source: readout.json (256 held-out sequences, the same rows for every run; `protjepa readout`) or, "
             "marked *, the run's last collapse-monitor batch.", "",
             "| run | held-out MLM loss (constant) | effective rank | latent score | cosine (mean target's) | "
             "readout R² student / predictions / residue |", "|---|---:|---:|---:|---:|---:|"]
    for variant in latents.values():
        for run in variant.runs:
            star = "*" if run.source == "monitor" else ""
            mlm = f"{_num(run.mlm_loss)} ({_num(run.unigram_entropy)}){star}"
            if not run.terms:
                lines.append(f"| {run.label} | {mlm} | {_num(run.rank, 2)} | - | - | - |")
            for id, t in run.terms.items():
                readout = t.get("readout_r2")
                r2 = " / ".join(_num(readout[k]) for k in ("student", "predictions", "residue")) if readout else "-"
                lines.append(f"| {run.label} ({id}) | {mlm} | {_num(run.rank, 2)} | {_score_text(t)}{star} | "
                             f"{_num(t.get('cosine'))} ({_num(t.get('cosine_of_mean'))}) | {r2} |")
    lines += ["", f"Per variant. *Learned*: the latent score above its constant in every seed; a variant whose "
              "latent term did not learn (or whose score was not logged) gets no verdict. *Default criteria*, against "
              f"the baseline: latent score >= its constant + {LEARNED_BY:g} in every seed, mean effective rank >= "
              f"{RANK_RATIO:g} x the baseline's, mean held-out MLM loss no worse than the baseline's worst seed.", "",
              "| variant | vs | held-out MLM loss, mean (seeds) | effective rank, mean (x baseline) | latent score, "
              "seeds | learned | default criteria |", "|---|---|---:|---:|---:|---|---|"]
    for variant in latents.values():
        baseline = latents.get(variant.baseline) if variant.baseline else None
        seeds = ", ".join(_num(r.mlm_loss) for r in variant.runs)
        ratio = f" ({variant.rank / baseline.rank:.2f}x)" if baseline and baseline.rank and variant.rank else ""
        scores = "; ".join(f"{t['metric']} " + ", ".join(_num(r.terms[id]["score"], 3, sign=True)
                                                           for r in variant.runs if id in r.terms)
                           + (f" (constant {constant_of(t):g})" if constant_of(t) else "")
                           for id, t in variant.runs[0].terms.items()) or "-"
        learned = "-" if not variant.has_latent_term else "yes" if variant.learned else "**no**"
        if variant.baseline is None:
            verdict = "(baseline)"
        else:
            missed = criteria(variant, baseline)
            verdict = "meets all three" if not missed else "misses: " + "; ".join(missed)
        lines.append(f"| {variant.name} | {variant.baseline or '-'} | {_num(variant.mlm_loss)} ({seeds}) | "
                     f"{_num(variant.rank, 2)}{ratio} | {scores} | {learned} | {verdict} |")
    return lines
