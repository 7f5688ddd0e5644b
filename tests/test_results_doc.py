"""docs/results.md makes no claim its committed report does not back: its W/L/T, sign-test
and step counts for paper_small are the ones in docs/results/paper_small/report.md."""
from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
REPORT = DOCS / "results" / "paper_small" / "report.md"
RESULTS = DOCS / "results.md"
# The row of results.md that states each variant's verdict, by its first words.
ROW_OF = {"mlm_jepa_masked": "| ours, paper_small", "mlm_jepa_all": "| all-position",
          "jepa_only": "| JEPA-only", "mlm_jepa_ema_half": "| EMA teacher"}


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the body rows of the first table under ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2:]:  # after the header and the rule
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def row_of(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_verdicts_match_the_report():
    report, results = REPORT.read_text(), RESULTS.read_text()
    verdicts = table_rows(report, "## Verdicts")
    assert {v[0] for v in verdicts} == set(ROW_OF)
    for variant, _, wins, losses, ties, p in verdicts:
        line = row_of(results, ROW_OF[variant])
        assert re.search(rf"\b{wins} / {losses} / {ties}\b", line), (variant, line)
        assert p in line, (variant, p, line)


def test_step_counts_match_the_report():
    report, results = REPORT.read_text(), RESULTS.read_text()
    steps = {run: int(cells[0]) for run, *cells in table_rows(report, "## Budget used")}
    for run in ("mlm/seed0", "mlm/seed1", "mlm_jepa_masked/seed0", "mlm_jepa_masked/seed1"):
        assert f"{steps[run]:,}" in results, run
    for variant in ("mlm_jepa_all", "mlm_jepa_ema_half"):
        assert f"{steps[variant + '/seed0']:,}" in row_of(results, ROW_OF[variant])


def test_report_plots_are_committed():
    for name in re.findall(r"\]\((plots/[^)]+\.png)\)", REPORT.read_text()):
        assert (REPORT.parent / name).is_file(), name
