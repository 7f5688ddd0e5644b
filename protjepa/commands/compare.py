"""``protjepa compare A B``: per-task W/L/T of A against B, and the sign test; over seeds when
A or B holds several.

A and B are probe results: a ``results.json``, the folder holding it, or a run folder (its
``probe/``), or a variant's seeds: a folder of ``seed<k>/`` run folders (the layout an
experiment writes under ``runs/<variant>/``). With seeds on either side the comparison adds the
seed noise, the noise rule, the paired test and the verdict
(:mod:`protjepa.evaluation.seed_stats`). Prints the table and writes ``compare.md`` and
``compare.png``.
"""
from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    from protjepa.commands.arguments import number
    from protjepa.evaluation.compare import DEFAULT_TIE

    parser.add_argument("run_a", help="candidate: results.json, a probe or run folder, or a folder of seed<k>/ runs")
    parser.add_argument("run_b", help="baseline: likewise")
    parser.add_argument("--tie", type=number(0), default=DEFAULT_TIE,
                        help=f"|A - B| at or below this is a tie (default {DEFAULT_TIE})")
    parser.add_argument("--name-a", help="label of A (default: its folder name)")
    parser.add_argument("--name-b", help="label of B")
    parser.add_argument("--out", help="output folder (default: ./compare/<A>_vs_<B>)")


def _name(path: str) -> str:
    """The run's name: the folder above ``probe/`` or ``results.json``."""
    parts = [p for p in Path(path).resolve().parts if p not in ("probe", "results.json")]
    return parts[-1] if parts else path


def run(args) -> int:
    from protjepa.evaluation.compare import check_comparable, compare, plot, to_markdown
    from protjepa.evaluation.seed_stats import compare_variants, load_seeds, null_summary, seed_pairs, seeded_markdown
    from protjepa.paths import writable_folder

    name_a, name_b = args.name_a or _name(args.run_a), args.name_b or _name(args.run_b)
    if name_a == name_b:
        name_a, name_b = f"A ({name_a})", f"B ({name_b})"
    a, b = load_seeds(args.run_a), load_seeds(args.run_b)
    seeded = len(a[0]) > 1 or len(b[0]) > 1
    if seeded:
        result = compare_variants(a, b, args.tie, name_a, name_b)
        means = result.means
    else:
        means = compare(a[0][0], b[0][0], args.tie, name_a, name_b)
    check_comparable(means, args.run_a, args.run_b)
    out = Path(args.out) if args.out else Path("compare") / f"{_name(args.run_a)}_vs_{_name(args.run_b)}"
    writable_folder(out, "comparison output (--out)")
    if seeded:
        nulls = {name: null_summary(seed_pairs(name, probed, seeds, args.tie))
                 for name, (probed, seeds) in ((name_a, a), (name_b, b)) if len(probed) > 1}
        text = seeded_markdown(result, nulls)
        plot(means, out / "compare.png", {r.row.task: r.outcome(args.tie) for r in result.rows},
             {r.row.task: r.band for r in result.rows},
             f"noise rule {result.count('W')} W / {result.count('L')} L / {result.count('T')} T, "
             f"verdict: {result.verdict} (whiskers: noise band)")
    else:
        text = to_markdown(means)
        plot(means, out / "compare.png")
    print(text, end="")
    (out / "compare.md").write_text(text)
    print(f"\nwrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 0
