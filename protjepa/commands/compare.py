"""``protjepa compare RUN_A RUN_B``: per-task W/L/T of A against B, and the sign test.

RUN_A and RUN_B are probe results: a ``results.json``, the folder holding it, or a run
folder (its ``probe/``). Prints the table and writes ``compare.md`` and ``compare.png``.
"""
from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    from protjepa.evaluation.compare import DEFAULT_TIE

    parser.add_argument("run_a", help="candidate: results.json, a probe folder or a run folder")
    parser.add_argument("run_b", help="baseline: likewise")
    parser.add_argument("--tie", type=float, default=DEFAULT_TIE,
                        help=f"|A - B| at or below this is a tie (default {DEFAULT_TIE})")
    parser.add_argument("--name-a", help="label of A (default: its folder name)")
    parser.add_argument("--name-b", help="label of B")
    parser.add_argument("--out", help="output folder (default: ./compare/<A>_vs_<B>)")


def _name(path: str) -> str:
    """The run's name: the folder above ``probe/`` or ``results.json``."""
    parts = [p for p in Path(path).resolve().parts if p not in ("probe", "results.json")]
    return parts[-1] if parts else path


def run(args) -> int:
    from protjepa.evaluation.compare import CompareError, compare, load_results, plot, to_markdown
    from protjepa.paths import writable_folder

    name_a, name_b = args.name_a or _name(args.run_a), args.name_b or _name(args.run_b)
    if name_a == name_b:
        name_a, name_b = f"A ({name_a})", f"B ({name_b})"
    a, b = load_results(args.run_a), load_results(args.run_b)
    result = compare(a, b, args.tie, name_a, name_b)
    if not result.rows:  # a sign test of nothing would read "0/0/0, p = 1"
        raise CompareError(f"{a['path']} and {b['path']}: no task is scored in both, nothing to compare")
    out = Path(args.out) if args.out else Path("compare") / f"{_name(args.run_a)}_vs_{_name(args.run_b)}"
    writable_folder(out, "comparison output (--out)")
    text = to_markdown(result)
    print(text, end="")
    (out / "compare.md").write_text(text)
    plot(result, out / "compare.png")
    print(f"\nwrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 0
