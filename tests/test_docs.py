"""The examples in docs/ run: every ```python block executes (blocks of one page share a
namespace, top to bottom, in a temporary folder), every ```yaml block that starts with
``# recipe`` validates as a recipe, and every one that starts with ``# experiment`` loads as an
experiment file (its recipes and tasks resolved)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from protjepa.experiment.spec import load_experiment
from protjepa.recipe import parse_recipe

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
PAGES = sorted(DOCS.glob("*.md"))


def blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(page.read_text()) if kind == lang]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch):
    code = blocks(page, "python")
    if not code:
        pytest.skip("no python examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, body in enumerate(code):
        exec(compile(body, f"{page.name}[python {i}]", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_recipe_examples_validate(page):
    recipes = [b for b in blocks(page, "yaml") if b.startswith("# recipe")]
    if not recipes:
        pytest.skip("no recipe examples")
    for i, body in enumerate(recipes):
        parse_recipe(yaml.safe_load(body), f"{page.name}[yaml {i}]", body)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_experiment_examples_load(page, tmp_path):
    experiments = [b for b in blocks(page, "yaml") if b.startswith("# experiment")]
    if not experiments:
        pytest.skip("no experiment examples")
    for i, body in enumerate(experiments):
        path = tmp_path / f"{page.stem}_{i}.yaml"
        path.write_text(body)
        assert load_experiment(path, output=tmp_path / "out").runs
