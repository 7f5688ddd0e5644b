"""The recipes and experiments shipped as package data: listed, copied out, taken by name;
and the one-line errors for a missing extra, the version, ``python -m protjepa``."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import protjepa
from protjepa import shipped
from protjepa.cli import main
from protjepa.recipe import load_recipe


def test_recipes_lists_every_shipped_file_with_its_description(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"mlm", "mlm_jepa_masked", "experiments/smoke"} <= set(names)
    assert any(line.startswith("mlm ") and "MLM-only baseline" in line for line in lines)


def test_copy_writes_an_editable_file_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["recipes", "copy", "mlm_jepa_masked", str(tmp_path)]) == 0
    copied = tmp_path / "mlm_jepa_masked.yaml"
    assert copied.read_text() == (shipped.folder() / "mlm_jepa_masked.yaml").read_text()
    assert main(["recipes", "copy", "mlm_jepa_masked", str(copied)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["recipes", "copy", "nope"]) == 2
    assert "no shipped recipe or experiment of that name" in capsys.readouterr().err


def test_a_name_resolves_to_the_shipped_recipe_unless_a_file_of_that_name_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_recipe("mlm_jepa_masked").name == "mlm_jepa_masked"
    assert load_recipe("mlm.yaml").name == "mlm"
    (tmp_path / "mlm.yaml").write_text(yaml.safe_dump({"name": "mine", "encoder": {"name": "esm2", "preset": "esm2_8m"},
                                                       "objectives": [{"name": "mlm"}]}))
    assert load_recipe("mlm.yaml").name == "mine"


def test_a_copied_experiment_still_finds_its_recipes(tmp_path, capsys):
    from protjepa.experiment.spec import load_experiment

    copied = shipped.copy("experiments/smoke", tmp_path)
    experiment = load_experiment(copied)
    assert [v.name for v in experiment.variants] == ["mlm", "masked"]
    assert main(["validate", "experiments/smoke", str(copied)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"ok   {copied}: experiment smoke")


# The experiments that continue from a base trained on a GPU, and the base each names: until the base is
# committed there, validating the experiment says so in one line.
WAITING_FOR_A_BASE = {"experiments/continued_gpu_base": "docs/results/bases/esm2_8m_swissprot50"}


def test_every_shipped_experiment_validates_or_names_the_base_it_waits_for(capsys):
    experiments = [s.name for s in shipped.shipped() if s.name.startswith("experiments/")]
    assert set(WAITING_FOR_A_BASE) <= set(experiments)
    for name in experiments:
        code = main(["validate", name])
        out = capsys.readouterr().out
        base = shipped.folder().parent / WAITING_FOR_A_BASE.get(name, "")
        if name in WAITING_FOR_A_BASE and not base.exists():
            path = shipped.find(name)
            assert code == 1 and out == (f"FAIL {path}:{_line_of(path, 'checkpoint:')}: base.checkpoint: {base}: no "
                                         "such base (make one from a finished MLM run with protjepa base RUN "
                                         "FOLDER, or name another)\n"), out
        else:
            assert code == 0 and out.startswith("ok   "), out


def _line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_without_composer_train_says_which_extra_to_install():
    done = run_python("import sys; sys.modules['composer'] = None\n"
                      "from protjepa.cli import main; sys.exit(main(['train', 'mlm', '--budget', '1steps']))")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("protjepa: error: training needs composer, which is not installed: "
                                  "pip install 'protjepa[train]'")


def test_without_torchtune_the_modern_encoder_says_which_extra_to_install():
    done = run_python("import sys; sys.modules['torchtune'] = None\n"
                      "from protjepa.build import build_encoder\nfrom protjepa.recipe import parse_recipe\n"
                      "recipe = parse_recipe({'name': 'x', 'encoder': {'name': 'modern', 'num_layers': 1, "
                      "'embed_dim': 16, 'attention_heads': 2}, 'objectives': [{'name': 'mlm'}]})\n"
                      "try:\n    build_encoder(recipe)\nexcept Exception as exc:\n    print(type(exc).__name__, exc)")
    assert done.stdout.strip() == ("MissingExtra the modern encoder needs torchtune, which is not installed: "
                                   "pip install 'protjepa[modern]'"), done.stderr


@pytest.mark.parametrize("argv", [["-m", "protjepa", "--version"], ["-m", "protjepa.cli", "--version"]])
def test_version(argv):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    assert done.stdout == f"protjepa {protjepa.__version__}\n" and protjepa.__version__ != "unknown"


def test_validate_print_fills_every_default_and_loads_back(tmp_path, capsys):
    assert main(["validate", "mlm_jepa_masked", "--print"]) == 0
    text = capsys.readouterr().out.split("\n", 1)[1]
    resolved = yaml.safe_load(text)
    jepa = resolved["objectives"][1]
    assert jepa["target"]["momentum"] == 0.996 and jepa["predictor"]["hidden_mult"] == pytest.approx(8 / 3)
    assert resolved["encoder"]["num_layers"] == 6 and resolved["train"]["checkpoint_at"]
    (tmp_path / "resolved.yaml").write_text(text)
    assert main(["validate", str(tmp_path / "resolved.yaml"), "--print"]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1] == text


def test_validate_print_into_a_closed_pipe_stops_quietly():
    reader = subprocess.Popen([sys.executable, "-m", "protjepa", "validate", "--print", *["experiments/paper_small"] * 40],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert reader.stdout.readline().startswith("ok ")
    reader.stdout.close()  # | head -1
    assert reader.wait() == 0 and reader.stderr.read() == ""
