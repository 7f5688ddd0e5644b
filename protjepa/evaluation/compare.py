"""Two probed runs, task by task: the paper's wins / losses / ties and a one-sided sign test.

Each task is compared on its main metric (all are higher-is-better). A is the candidate:
``delta = A - B``; a win when ``delta > tie``, a loss when ``delta < -tie``, a tie
otherwise. Ties are left out of the sign test: with ``w`` wins and ``l`` losses,
``p = P(X >= w)`` for ``X ~ Binomial(w + l, 1/2)`` (10 / 3 gives 0.046, as published).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from protjepa.errors import UserError
from protjepa.yamlio import read_json

RESULTS_FILE = "results.json"
DEFAULT_TIE = 0.005


class CompareError(UserError, ValueError):
    """Results that cannot be read or compared."""


@dataclass
class Row:
    task: str
    metric: str
    a: float
    b: float

    @property
    def delta(self) -> float:
        return self.a - self.b

    def outcome(self, tie: float) -> str:
        return "W" if self.delta > tie else "L" if self.delta < -tie else "T"


@dataclass
class Comparison:
    name_a: str
    name_b: str
    tie: float
    rows: list[Row]
    unmatched: list[str] = field(default_factory=list)  # "task: why", for tasks not compared
    warnings: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(r.outcome(self.tie) == outcome for r in self.rows)

    @property
    def p_value(self) -> float:
        """One-sided sign test that A is better."""
        return sign_test(self.count("W"), self.count("L"))

    @property
    def p_worse(self) -> float:
        """One-sided sign test that A is worse."""
        return sign_test(self.count("L"), self.count("W"))


def sign_test(wins: int, losses: int) -> float:
    """One-sided: the chance of ``wins`` or more of ``wins + losses`` fair coin flips (1.0 when none)."""
    n = wins + losses
    return float(stats.binom.sf(wins - 1, n, 0.5)) if n else 1.0


def load_results(path: str | Path) -> dict:
    """A results file, a probe output folder, or a run folder (its ``probe/``)."""
    path = Path(path)
    for candidate in (path, path / RESULTS_FILE, path / "probe" / RESULTS_FILE):
        if candidate.is_file():
            results = read_json(candidate, CompareError, "probe results")
            check_results(results, str(candidate))
            results.setdefault("path", str(candidate))
            return results
    raise CompareError(f"{path}: no {RESULTS_FILE} there, nor in {path / 'probe'} (run protjepa probe first)")


def check_results(results: object, source: str) -> None:
    """Probe results as ``protjepa probe`` writes them: a mapping whose ``tasks`` maps each task to a mapping."""
    tasks = results.get("tasks") if isinstance(results, dict) else None
    if not isinstance(tasks, dict):
        raise CompareError(f"{source}: not a protjepa probe result (no 'tasks' mapping)")
    for name, task in tasks.items():
        if not isinstance(task, dict):
            raise CompareError(f"{source}: tasks.{name}: expected a mapping of the task's metric and value")


def check_tie(tie: object) -> float:
    """The tie margin: a finite number at least 0 (with -1, identical results would read as a win)."""
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or not 0 <= tie < math.inf:
        raise CompareError(f"tie {tie!r}: expected a finite number at least 0 (|A - B| at or below it is a tie)")
    return float(tie)


def check_comparable(c: Comparison, source_a: str, source_b: str) -> Comparison:
    """``c``, unless no task is scored in both: a sign test of nothing would read "0/0/0, p = 1"."""
    if not c.rows:
        raise CompareError(f"{source_a} and {source_b}: no task is scored in both, nothing to compare")
    return c


def _score(results: dict, task: str) -> float:
    value = results["tasks"][task]["value"]
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if isinstance(value, bool) or not math.isfinite(score):
        raise CompareError(f"{results.get('path', 'results')}: tasks.{task}.value: {value!r} is not a finite number")
    return score


def compare(a: dict, b: dict, tie: float = DEFAULT_TIE, name_a: str = "A", name_b: str = "B") -> Comparison:
    out = Comparison(name_a, name_b, check_tie(tie), [])
    for task in sorted(set(a["tasks"]) | set(b["tasks"])):
        ra, rb = a["tasks"].get(task), b["tasks"].get(task)
        if ra is None or rb is None:
            out.unmatched.append(f"{task}: only in {name_a if rb is None else name_b}")
        elif ra.get("metric") != rb.get("metric"):
            out.unmatched.append(f"{task}: metrics differ ({ra.get('metric')} / {rb.get('metric')})")
        elif ra.get("value") is None or rb.get("value") is None:
            missing = name_a if ra.get("value") is None else name_b
            out.unmatched.append(f"{task}: no score in {missing}")
        else:
            out.rows.append(Row(task, ra["metric"], _score(a, task), _score(b, task)))
    for key in sorted(set(a.get("settings", {})) | set(b.get("settings", {}))):
        va, vb = a.get("settings", {}).get(key), b.get("settings", {}).get(key)
        if va != vb:
            out.warnings.append(f"probed with different {key}: {va} ({name_a}) vs {vb} ({name_b})")
    return out


def to_markdown(c: Comparison) -> str:
    lines = [
        f"# {c.name_a} vs {c.name_b}",
        "",
        f"Main metric per task (higher is better); delta = {c.name_a} - {c.name_b}; "
        f"a tie when |delta| <= {c.tie:g}.",
        "",
        f"| task | metric | {c.name_a} | {c.name_b} | delta | W/L/T |",
        "|---|---|---:|---:|---:|:---:|",
    ]
    lines += [f"| {r.task} | {r.metric} | {r.a:.4f} | {r.b:.4f} | {r.delta:+.4f} | {r.outcome(c.tie)} |"
              for r in c.rows]
    w, l, t = c.count("W"), c.count("L"), c.count("T")
    lines += [
        "",
        f"**{c.name_a} vs {c.name_b}: {w} wins / {l} losses / {t} ties**; one-sided sign test "
        f"(ties excluded) p = {c.p_value:.4g}",
    ]
    if c.unmatched:
        lines += [""] + [f"- not compared: {why}" for why in c.unmatched]
    if c.warnings:
        lines += [""] + [f"- warning: {why}" for why in c.warnings]
    return "\n".join(lines) + "\n"


def plot(c: Comparison, path: str | Path, outcomes: dict[str, str] | None = None,
         bands: dict[str, float | None] | None = None, title: str | None = None) -> Path:
    """A horizontal bar per task: delta, coloured by outcome (the tie rule's unless ``outcomes``
    gives them per task), the tie band shaded; ``bands``: whiskers per task (the noise band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"W": "#2a9d8f", "L": "#e76f51", "T": "#9e9e9e"}
    outcomes = outcomes or {r.task: r.outcome(c.tie) for r in c.rows}
    whiskers = [(bands or {}).get(r.task) or 0.0 for r in c.rows]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(c.rows) + 1.6))
    names = [f"{r.task} ({r.metric})" for r in c.rows]
    ax.barh(names, [r.delta for r in c.rows], color=[colours[outcomes[r.task]] for r in c.rows],
            xerr=whiskers if any(whiskers) else None)
    ax.axvspan(-c.tie, c.tie, color="#eeeeee", zorder=0)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{c.name_a} - {c.name_b}")
    ax.set_title(title or f"{c.count('W')} W / {c.count('L')} L / {c.count('T')} T, sign test p = {c.p_value:.3g}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
