"""``protjepa validate`` / ``list`` / ``--set`` through ``cli.main``, the real console script, and the wheel."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from protjepa.cli import main
from wheels import build_wheel

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOOD = """\
name: good
encoder:
  name: esm2
  preset: esm2_8m
objectives:
  - name: mlm
  - name: jepa
    weight: 0.45
"""
BAD = GOOD.replace("weight: 0.45", "weight: 0.45\n    loss: huber")  # line 9


@pytest.fixture
def recipes(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    return tmp_path


def test_validate_all_good_exits_0(recipes, capsys):
    assert main(["validate", str(recipes / "good.yaml")]) == 0
    assert capsys.readouterr().out == f"ok   {recipes}/good.yaml: good [mlmx1, jepax0.45]\n"


def test_validate_reports_each_bad_recipe_with_file_line_and_path(recipes, capsys):
    assert main(["validate", str(recipes / "good.yaml"), str(recipes / "bad.yaml"), "nope.yaml"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok   ")
    assert lines[1] == f"FAIL {recipes}/bad.yaml:9: objectives[1].loss: expected cosine|mse|smooth_l1"
    assert lines[2] == "FAIL nope.yaml: no such recipe file"


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("objectives.1.weight=0.3", "ok   {r}/good.yaml: good [mlmx1, jepax0.3]"),
        ("objectives.0.id=masked_lm", "ok   {r}/good.yaml: good [masked_lmx1, jepax0.45]"),
        ("objectives.1.loss=huber",
         "FAIL {r}/good.yaml: --set objectives.1.loss: objectives[1].loss: expected cosine|mse|smooth_l1"),
        ("objectives.5.weight=1", "FAIL {r}/good.yaml: --set objectives.5.weight: objectives has no item 5"),
        ("objectives.1.weight=[1", "FAIL {r}/good.yaml: --set objectives.1.weight: '[1' is not a YAML value"),
        ("name.first=x", "FAIL {r}/good.yaml: --set name.first: name is not a mapping or list"),
        ("seed", "FAIL {r}/good.yaml: --set 'seed': expected KEY.PATH=VALUE"),
    ],
)
def test_set_overrides(recipes, capsys, assignment, expected):
    code = main(["validate", str(recipes / "good.yaml"), "--set", assignment])
    out = capsys.readouterr().out.strip()
    assert out == expected.format(r=recipes)
    assert code == (0 if out.startswith("ok") else 1)


def test_set_then_print_shows_the_resolved_recipe(recipes, capsys):
    assert main(["validate", str(recipes / "good.yaml"), "--set", "optim.lr=1e-4", "--set", "masking.rate=0.15",
                 "--print"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out.split("\n", 1)[1])
    assert (resolved["optim"]["lr"], resolved["masking"]["rate"], resolved["encoder"]["preset"]) == (1e-4, 0.15, "esm2_8m")


def test_list_prints_encoders_and_objectives(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    encoders, objectives = out.split("objectives:\n")
    names = lambda block: {line.split()[0] for line in block.splitlines() if line.startswith("  ")}  # noqa: E731
    assert encoders.startswith("encoders:\n") and {"esm2", "modern"} <= names(encoders)
    assert {"mlm", "jepa", "vicreg", "sigreg"} <= names(objectives)
    assert "  modern       Modern from-scratch encoder: RoPE, RMSNorm, SwiGLU" in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the installed program


def test_console_script_validates_the_shipped_recipes_and_lists_entry_point_plugins(tmp_path):
    shipped = sorted(REPO.glob("recipes/*.yaml"))
    if not shipped:
        pytest.skip("no recipes shipped yet")
    run = subprocess.run([BIN / "protjepa", "validate", *map(str, shipped)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert [line.split()[:2] for line in run.stdout.splitlines()] == [["ok", f"{p}:"] for p in shipped]

    # A third-party distribution on the path advertises an objective through the entry-point group.
    (tmp_path / "cli_lab").mkdir()
    (tmp_path / "cli_lab" / "__init__.py").write_text(
        "from protjepa.objectives.base import Objective\nfrom protjepa.registry import register_objective\n\n\n"
        "@register_objective('cli_lab_norm')\nclass Norm(Objective):\n    \"\"\"A lab objective.\"\"\"\n"
    )
    (tmp_path / "cli_lab-0.1.dist-info").mkdir()
    (tmp_path / "cli_lab-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: cli_lab\nVersion: 0.1\n")
    (tmp_path / "cli_lab-0.1.dist-info" / "entry_points.txt").write_text("[protjepa.plugins]\ncli_lab = cli_lab\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    run = subprocess.run([BIN / "protjepa", "list"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"  cli_lab_norm A lab objective.  [plugin: {tmp_path}/cli_lab/__init__.py:5]" in run.stdout.splitlines()
    assert "  mlm " in run.stdout


# ----------------------------------------------------------------------------- the wheel


def module_names(files: list[str]) -> set[str]:
    """``protjepa/encoders/esm2.py`` -> ``protjepa.encoders.esm2`` (packages by their ``__init__``)."""
    return {f.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in files if f.endswith(".py")}


def editable_module_names() -> set[str]:
    """What the editable install imports: every module under the folders its finder maps packages to."""
    finder = next(Path(p) for p in sys.path if (Path(p) / "__editable__.protjepa-0.1.0.pth").exists())
    namespace: dict = {}
    exec(next(finder.glob("__editable___protjepa_*_finder.py")).read_text(), namespace)
    names = set()
    for package, folder in namespace["MAPPING"].items():
        for path in Path(folder).rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if all((Path(folder, *parts[:i]) / "__init__.py").exists() for i in range(len(parts))):
                names.add(".".join((package, *parts)).removesuffix(".__init__"))
    return names


@pytest.mark.slow
def test_wheel_ships_what_the_editable_install_imports(tmp_path):
    wheel = build_wheel(tmp_path)
    files = zipfile.ZipFile(wheel).namelist()
    for folder in ("objectives", "encoders"):
        expected = {f"protjepa/{folder}/{p.name}" for p in (REPO / folder).glob("*.py")}
        assert expected <= set(files), expected - set(files)
    shipped = {f"protjepa/recipes/{p.relative_to(REPO / 'recipes')}" for p in (REPO / "recipes").rglob("*.yaml")}
    assert shipped and shipped <= set(files), shipped - set(files)
    assert module_names(files) == editable_module_names()
    entry_points = zipfile.ZipFile(wheel).read(next(f for f in files if f.endswith("entry_points.txt"))).decode()
    assert "protjepa = protjepa.cli:main" in entry_points
