"""``protjepa compare A [A2 ...] B``: each candidate against the baseline B, task by task and over tasks.

Each argument is probe results: a ``results.json``, the folder holding it, or a run folder (its
``probe/``), or a variant's seeds: a folder of ``seed<k>/`` run folders (the layout an experiment
writes under ``runs/<variant>/``). Two single results: the paper's wins / losses / ties and its
sign test. With seeds on any side: the per-task rule, the tests over tasks and the verdict,
several candidates adjusted together (Holm), as the experiment report states them
(:mod:`protjepa.evaluation.family`). Prints the Markdown and writes ``compare.md`` and
``compare.png``.
"""
from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    from protjepa.commands.arguments import number
    from protjepa.evaluation.compare import DEFAULT_TIE

    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="candidates, then the baseline last: results.json, a probe or run folder, or a folder "
                             "of seed<k>/ runs")
    parser.add_argument("--tie", type=number(0), default=DEFAULT_TIE,
                        help=f"the paper's tie rule: |A - B| at or below this is a tie (default {DEFAULT_TIE})")
    parser.add_argument("--name", action="append", default=[], metavar="LABEL",
                        help="labels of the runs, in order (default: their folder names); repeatable")
    parser.add_argument("--out", help="output folder (default: ./compare/<A>_vs_<B>)")


def _name(path: str) -> str:
    """The run's name: the folder above ``probe/`` or ``results.json``."""
    parts = [p for p in Path(path).resolve().parts if p not in ("probe", "results.json")]
    return parts[-1] if parts else path


def labels(runs: list[str], given: list[str]) -> list[str]:
    """One distinct label a run: ``given`` in order, then folder names, numbered where they repeat."""
    from protjepa.errors import UserError

    if len(given) > len(runs):
        raise UserError(f"compare: {len(given)} --name labels for {len(runs)} runs")
    names = given + [_name(r) for r in runs[len(given):]]
    if len(set(names)) < len(names):
        names = [f"{chr(65 + i) if i < 26 else i} ({n})" for i, n in enumerate(names)]
    return names


def run(args) -> int:
    from protjepa.errors import UserError
    from protjepa.evaluation.compare import check_comparable, compare, plot, to_markdown
    from protjepa.evaluation.family import family_markdown, family_statistics, plot_family
    from protjepa.evaluation.seed_stats import load_seeds
    from protjepa.paths import writable_folder

    if len(args.runs) < 2:
        raise UserError("compare: give at least two runs: the candidates, then the baseline")
    names = labels(args.runs, args.name)
    variants = [load_seeds(path, name) for path, name in zip(args.runs, names)]
    *candidates, baseline = variants
    out = Path(args.out) if args.out else Path("compare") / f"{_name(args.runs[0])}_vs_{_name(args.runs[-1])}"
    if all(len(v.seeds) == 1 for v in variants) and len(candidates) == 1:
        means = check_comparable(compare(candidates[0].probed[0], baseline.probed[0], args.tie, names[0], names[-1]),
                                 args.runs[0], args.runs[-1])
        writable_folder(out, "comparison output (--out)")
        text = to_markdown(means)
        plot(means, out / "compare.png")
    else:
        stats = family_statistics({v.name: v for v in variants}, {v.name: baseline.name for v in candidates}, args.tie)
        for candidate, comparison in zip(args.runs, stats.comparisons.values()):
            check_comparable(comparison.means, candidate, args.runs[-1])
        writable_folder(out, "comparison output (--out)")
        text = family_markdown(stats)
        plot_family(stats.comparisons, out / "compare.png",
                    "; ".join(f"{n}: {c.verdict}" for n, c in stats.comparisons.items()))
    print(text, end="")
    (out / "compare.md").write_text(text)
    print(f"\nwrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 0
