"""Third-party plugins: a recipe's ``plugins:`` modules, duplicate names, the ``protjepa.plugins`` entry points."""
from __future__ import annotations

import importlib
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml

from protjepa import registry
from protjepa.batch import gather_positions
from protjepa.build import build_model
from protjepa.recipe import RecipeError, parse_recipe
from protjepa.registry import OBJECTIVES, RegistryError, load_plugins
from toy_model import toy_batch

# A lab's objective module, outside this repository.
LAB_OBJECTIVES = '''\
"""A toy third-party objective."""
from protjepa.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from protjepa.registry import OBJECTIVES, register_objective

OBJECTIVES.names()  # a plugin that looks names up while it is being imported must not recurse


class HiddenNormConfig(ObjectiveConfig):
    scale: float = 1.0


@register_objective("{name}", config=HiddenNormConfig)
class HiddenNorm(Objective):
    """Mean squared norm of the student's hidden states at the masked positions."""

    def forward(self, ctx):
        loss = self.config.scale * ctx.get("student.masked").pow(2).sum(-1).mean()
        return ObjectiveOutput(loss, {{"norm": loss.detach()}})
'''
DECORATOR_LINE = 1 + LAB_OBJECTIVES.splitlines().index('@register_objective("{name}", config=HiddenNormConfig)')


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Built-ins loaded, then every registry change, plugin import and sys.path entry undone after the test."""
    load_plugins()
    monkeypatch.setattr(OBJECTIVES, "_entries", dict(OBJECTIVES._entries))
    monkeypatch.setattr(registry, "_loaded_modules", set())
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("plugin_lab", "thirdparty_lab")):
            del sys.modules[name]


def write_package(root: Path, package: str, files: dict[str, str]) -> None:
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    for name, text in files.items():
        (root / package / name).write_text(text)


def recipe_text(plugins: list[str], objective: dict) -> str:
    raw = {"name": "lab", "plugins": plugins, "encoder": {"_component_": "toy_model.ToyEncoder"},
           "objectives": [objective]}
    return yaml.safe_dump(raw, sort_keys=False)


def parse(text: str):
    return parse_recipe(yaml.safe_load(text), "lab.yaml", text)


def test_recipe_plugin_module_trains_one_step(isolated):
    write_package(isolated, "plugin_lab", {"objectives.py": LAB_OBJECTIVES.format(name="hidden_norm")})
    recipe = parse(recipe_text(["plugin_lab.objectives"], {"name": "hidden_norm", "scale": 0.5, "weight": 2.0}))
    assert OBJECTIVES.get("hidden_norm").where == f"{isolated}/plugin_lab/objectives.py:{DECORATOR_LINE}"
    model = build_model(recipe)
    batch = toy_batch()
    out = model(batch)
    masked = gather_positions(model.encoder(batch.inputs, batch.padding_mask).last, batch.masked_index)
    torch.testing.assert_close(out.loss, 2.0 * 0.5 * masked.pow(2).sum(-1).mean())
    out.loss.backward()
    assert model.encoder.embed.weight.grad.abs().sum() > 0


def test_a_plugin_that_does_not_weigh_masked_rows_is_refused_with_static_shapes(isolated):
    """Static shapes fill the masked positions with weight-0 filler: an objective that has not said it
    applies those weights (weighs_masked_rows) would average it in, so the recipe is refused."""
    write_package(isolated, "plugin_lab", {"objectives.py": LAB_OBJECTIVES.format(name="hidden_norm")})
    raw = yaml.safe_load(recipe_text(["plugin_lab.objectives"], {"name": "hidden_norm"}))
    raw["data"] = {"packing": True, "static_shapes": True}
    text = yaml.safe_dump(raw, sort_keys=False)
    with pytest.raises(RecipeError, match=r"^lab\.yaml:7: objectives\[0\]: with data.static_shapes: true, "
                                          r"HiddenNorm does not weigh the filler rows of masked positions "
                                          r"\(weighs_masked_rows\)$"):
        parse(text)


def test_plugin_config_errors_name_the_line(isolated):
    write_package(isolated, "plugin_lab", {"objectives.py": LAB_OBJECTIVES.format(name="hidden_norm")})
    with pytest.raises(RecipeError, match=r"^lab\.yaml:8: objectives\[0\]\.scale: Input should be a valid number"):
        parse(recipe_text(["plugin_lab.objectives"], {"name": "hidden_norm", "scale": "big"}))


def test_duplicate_name_names_both_definitions(isolated):
    write_package(isolated, "plugin_lab", {"dup.py": LAB_OBJECTIVES.format(name="mlm")})
    builtin = Path(importlib.import_module("protjepa.objectives.mlm").__file__)
    builtin_line = 1 + builtin.read_text().splitlines().index('@register_objective("mlm", config=MLMConfig)')
    with pytest.raises(RecipeError) as err:
        parse(recipe_text(["plugin_lab.dup"], {"name": "mlm"}))
    assert str(err.value) == (
        f"lab.yaml:3: plugins[0]: duplicate objective name 'mlm': defined at {builtin}:{builtin_line} "
        f"and at {isolated}/plugin_lab/dup.py:{DECORATOR_LINE}"
    )


def test_reimporting_the_same_definition_is_not_a_duplicate(isolated):
    write_package(isolated, "plugin_lab", {"objectives.py": LAB_OBJECTIVES.format(name="hidden_norm")})
    load_plugins(["plugin_lab.objectives"])
    importlib.reload(sys.modules["plugin_lab.objectives"])
    assert "hidden_norm" in OBJECTIVES


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "plugins[0]: plugin module 'plugin_lab.missing': cannot import: No module named 'plugin_lab.missing'"),
        ({"missing.py": "raise RuntimeError('no licence file')\n"},
         "plugins[0]: plugin module 'plugin_lab.missing': failed while importing: RuntimeError: no licence file"),
    ],
)
def test_broken_plugin_modules_are_named(isolated, files, message):
    write_package(isolated, "plugin_lab", files)
    with pytest.raises(RecipeError) as err:
        parse(recipe_text(["plugin_lab.missing"], {"name": "mlm"}))
    assert str(err.value) == f"lab.yaml:3: {message}"


# ----------------------------------------------------------------------------- entry points


def install_dist(site: Path, package: str, objective: str) -> None:
    """A third-party distribution as pip would leave it: the package and a dist-info advertising it."""
    write_package(site, package, {"objectives.py": LAB_OBJECTIVES.format(name=objective)})
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[protjepa.plugins]\n{package} = {package}.objectives\n")


def test_entry_point_plugins_load_without_being_named(isolated, monkeypatch):
    install_dist(isolated, "thirdparty_lab", "thirdparty_norm")
    monkeypatch.setattr(registry, "_builtins_loaded", False)  # a fresh process: discovery runs on first use
    assert [ep.value for ep in metadata.entry_points(group="protjepa.plugins")] == ["thirdparty_lab.objectives"]
    assert "thirdparty_norm" in OBJECTIVES.names() and "mlm" in OBJECTIVES.names()
    recipe = parse(recipe_text([], {"name": "thirdparty_norm"}))
    assert recipe.objectives[0].name == "thirdparty_norm"


def test_broken_entry_point_names_itself_and_is_retried(isolated, monkeypatch):
    broken = metadata.EntryPoint(name="broken_lab", value="broken_lab_xyz.objectives", group="protjepa.plugins")
    monkeypatch.setattr(metadata, "entry_points", lambda group: metadata.EntryPoints([broken]))
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    message = (r"plugin entry point 'broken_lab' \(broken_lab_xyz\.objectives\): cannot import: "
               r"No module named 'broken_lab_xyz'")
    with pytest.raises(RegistryError, match=message):
        OBJECTIVES.get("mlm")
    with pytest.raises(RegistryError, match=message):  # not half-loaded and then silent
        OBJECTIVES.get("mlm")
