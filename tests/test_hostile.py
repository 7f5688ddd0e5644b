"""Hostile and careless input (issues 12, 26 and 36): no code runs from a checkpoint, an export or a run
folder without the user's word, no run is lost, no read hangs, no traceback reaches the user, and
``validate`` accepts only what ``train`` runs. Each class of error
goes through the real CLI in a subprocess at least once; the rest call ``protjepa.cli.main``
in-process (the same code, without the ~4 s start-up) or the one library function that enforces
the rule."""
from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import protjepa
from protjepa import registry
from protjepa.checkpoint_file import digest_path, file_digest
from protjepa.cli import main
from protjepa.data.corpus import data_files, make_corpus
from protjepa.data.fasta import FastaError, FastaReader
from protjepa.encoders.esm2 import ESM2
from protjepa.errors import UserError
from protjepa.encoders.weights import export_hf
from protjepa.evaluation.readout import read_out, write_readout
from protjepa.evaluation.tables import TaskDataError, read_table
from protjepa.evaluation.task_data import load_task
from protjepa.evaluation.tasks import TableSpec, parse_spec
from protjepa.export import load_encoder, save_encoder
from protjepa.recipe import DataConfig, load_recipe
from protjepa.training.trainer import held_out_on_training_records
from protjepa.training import checkpoints as checkpoints_module
from protjepa.training.checkpoints import CheckpointError, read_checkpoint, save_atomic
from protjepa.training.runlock import locked_run_dir
from protjepa.yamlio import YamlLines

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny_hostile",
    "encoder": {"name": "esm2", "num_layers": 1, "embed_dim": 16, "attention_heads": 2},
    "objectives": [{"name": "mlm"}, {"name": "jepa", "weight": 0.5}],
    "data": {"crop": 32, "batch_tokens": 512, "shuffle_buffer": 8},
    "budget": {"steps": 3},
    "train": {"device": "cpu", "threads": 1, "log_every": 1, "monitor_every": 100, "monitor_sequences": 4},
}


def write_recipe(path: Path, **changes) -> Path:
    recipe = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            recipe.setdefault(section, {})[name] = value
        else:
            recipe[section] = value
    path.write_text(yaml.safe_dump(recipe))
    return path


def cli(*args: str, cwd: Path, data_root: Path, env: dict | None = None, timeout: int = 120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROTJEPA_DATA": str(data_root), **(env or {})}
    return subprocess.run([sys.executable, "-m", "protjepa.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


PROGRESS = re.compile(r"step \d+ \| ")  # a run's records on stderr (no terminal), before it stopped


def one_line(stderr: str, *needles: str) -> str:
    """The one stderr line of a refused command (besides a run's progress records); it names what it must."""
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def refused(done, *needles: str, status: int = 2) -> str:
    assert done.returncode == status, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stdout + done.stderr
    return one_line(done.stderr, *needles)


def main_refuses(capsys, argv: list[str], *needles: str, status: int = 2) -> str:
    assert main(argv) == status
    return one_line(capsys.readouterr().err, *needles)


def usage_refuses(capsys, argv: list[str], *needles: str) -> str:
    """A flag's value refused as it is parsed: one line, exit 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return one_line(capsys.readouterr().err, *needles)


class Booby:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One finished tiny run, started over a 0-byte partial checkpoint a SIGKILL would leave."""
    folder = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(folder / "tiny.yaml")
    (folder / "run" / "checkpoints").mkdir(parents=True)
    (folder / "run" / "checkpoints" / ".partial-ckpt-0.500.pt").write_bytes(b"")
    done = cli("train", str(recipe), "--run-dir", str(folder / "run"), cwd=folder, data_root=data_root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "removed the partial checkpoint files" in done.stdout
    return folder


# --------------------------------------------------------------------------- 1, 2: code execution


def test_a_booby_trapped_checkpoint_is_refused_and_runs_nothing(trained, tmp_path, data_root):
    marker = tmp_path / "PWNED"
    good = torch.load(trained / "run" / "checkpoints" / "ckpt-1.000.pt", weights_only=False)  # our own file
    good["state"]["callbacks"]["x"] = Booby(marker)
    torch.save(good, tmp_path / "evil.pt")
    done = cli("train", str(trained / "tiny.yaml"), "--run-dir", str(tmp_path / "run"), "--resume",
               str(tmp_path / "evil.pt"), cwd=tmp_path, data_root=data_root)
    refused(done, "evil.pt", "refused", "posix.system")
    assert not marker.exists() and not (tmp_path / "run" / "recipe.yaml").exists()
    # Composer's own restore path reads through the same reader.
    from composer.utils import checkpoint as composer_checkpoint

    with pytest.raises(CheckpointError, match="refused"):
        composer_checkpoint.safe_torch_load(str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_a_recipe_is_trusted_code_and_validate_says_what_it_checked(tmp_path, capsys):
    marker = tmp_path / "RAN"
    shell = write_recipe(tmp_path / "shell.yaml", encoder={"_component_": "os.system", "command": f"touch {marker}"})
    module = write_recipe(tmp_path / "module.yaml", encoder={"_component_": "os.path"})
    assert main(["validate", str(shell), str(module)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok") and "not called" in out[0] and "trusted code" in out[0]
    assert out[1].startswith("FAIL") and "encoder._component_: os.path is a module, not an encoder factory" in out[1]
    assert not marker.exists()
    for doc in ("README.md", "docs/recipes.md", "docs/extending.md"):
        assert "a recipe is trusted code" in (REPO / doc).read_text().lower(), doc


# --------------------------------------------------------------------------- 3: two processes, one run


def test_a_second_train_on_a_locked_run_directory_is_refused(trained, tmp_path, data_root, capsys):
    run = tmp_path / "run"
    run.mkdir()  # not the lock's own: it stays when the lock goes
    with locked_run_dir(run):
        done = cli("train", str(trained / "tiny.yaml"), "--run-dir", str(run), cwd=tmp_path, data_root=data_root)
    refused(done, str(run), "another protjepa train", f"pid {os.getpid()}")
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written by the refused one
    (run / ".lock").write_text("pid 999999999 since yesterday\n")  # its owner is gone
    with locked_run_dir(run):
        assert (run / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    assert "took over the lock of pid 999999999 (no longer running)" in capsys.readouterr().err
    assert (run / ".lock").read_text() == ""  # released


# --------------------------------------------------------------------------- 4: non-finite training


def test_non_finite_settings_are_refused_by_the_schema(tmp_path, capsys):
    bad = {"lr": "optim__lr", "weight": "objectives", "warmup": "optim__warmup", "betas": "optim__betas",
           "eps": "optim__eps"}
    files = [
        write_recipe(tmp_path / "lr.yaml", optim__lr=float("inf")),
        write_recipe(tmp_path / "weight.yaml", objectives=[{"name": "mlm", "weight": float("nan")}]),
        write_recipe(tmp_path / "warmup.yaml", optim__warmup=float("inf")),
        write_recipe(tmp_path / "betas.yaml", optim__betas=[2, 3]),
        write_recipe(tmp_path / "eps.yaml", optim__eps=-1),
    ]
    assert len(files) == len(bad)
    assert main(["validate", *map(str, files)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [f"FAIL {f}" for f in files]
    for line, key in zip(out, ("optim.lr: inf is not a finite", "objectives[0].weight: nan is not a finite",
                               "optim.warmup: inf is not a finite", "optim.betas[0]", "optim.eps")):
        assert key in line, line
    main_refuses(capsys, ["train", str(files[0])], "optim.lr", "not a finite number")


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_root):
    recipe = write_recipe(tmp_path / "explode.yaml", optim={"lr": 1e30, "warmup": 0, "grad_clip": None},
                          budget={"steps": 8}, train={**TINY["train"], "log_every": 4})
    done = cli("train", str(recipe), "--run-dir", str(tmp_path / "run"), cwd=tmp_path, data_root=data_root)
    line = refused(done, "step 2: the mlm, jepa loss terms went non-finite", "newest: ", "ckpt-0.125.pt")
    assert "no checkpoint written after it" in line
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.pt")) == ["ckpt-0.125.pt"]
    weights = read_checkpoint(checkpoints / "ckpt-0.125.pt")["state"]["model"]
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (tmp_path / "run" / "export").exists()


# --------------------------------------------------------------------------- 5: integrity


def test_a_corrupt_checkpoint_is_refused_and_stale_partials_are_gone(trained, tmp_path, data_root, capsys):
    checkpoints = trained / "run" / "checkpoints"
    assert not list(checkpoints.glob(".partial-*"))  # the fixture's 0-byte partial was cleaned
    assert {p.name for p in checkpoints.glob("*.sha256")} == {"ckpt-0.125.pt.sha256", "ckpt-0.500.pt.sha256",
                                                              "ckpt-1.000.pt.sha256"}
    corrupt = tmp_path / "ckpt-0.500.pt"
    data = bytearray((checkpoints / "ckpt-0.500.pt").read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(range(64))  # finite garbage inside a tensor
    corrupt.write_bytes(bytes(data))
    (tmp_path / "ckpt-0.500.pt.sha256").write_bytes((checkpoints / "ckpt-0.500.pt.sha256").read_bytes())
    main_refuses(capsys, ["train", str(trained / "tiny.yaml"), "--run-dir", str(tmp_path / "run"),
                          "--data-root", str(data_root), "--resume", str(corrupt)],
                 "ckpt-0.500.pt", "do not match the sha256")


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    def full_disk(state, filename):
        Path(filename).write_bytes(b"part of a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints_module, "save_checkpoint", full_disk)
    with pytest.raises(CheckpointError, match=r"ckpt-0\.500\.pt: cannot write the checkpoint: No space left") as info:
        save_atomic(None, tmp_path / "ckpt-0.500.pt")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 6: Ctrl-C and SIGTERM


def long_recipe(path: Path, **changes) -> Path:
    """A 120 s run whose first checkpoint comes after 0.6 s of training."""
    return write_recipe(path, budget={"wall_clock": "120s"},
                        train={**TINY["train"], "log_every": 50, "checkpoint_at": [0.005, 1.0]}, **changes)


def stop_once_written(argv: list[str], cwd: Path, first: Path, signum: int, data_root: Path,
                      **env: str) -> tuple[int, str, str]:
    """``protjepa ARGV`` in a process of its own, sent ``signum`` once ``first`` (a checkpoint) exists:
    (exit status, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROTJEPA_DATA": str(data_root), **env}
    process = subprocess.Popen([sys.executable, "-m", "protjepa.cli", *argv], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


@pytest.mark.parametrize("signum, status, said", [
    pytest.param(signal.SIGINT, 130, "interrupted", id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, "stopped by SIGTERM", id="SIGTERM"),  # what schedulers send
])
def test_ctrl_c_says_where_the_run_stopped_and_how_to_continue(tmp_path, data_root, signum, status, said):
    recipe = long_recipe(tmp_path / "long.yaml")
    first = tmp_path / "run" / "checkpoints" / "ckpt-0.005.pt"
    returncode, _, err = stop_once_written(["train", str(recipe), "--run-dir", "run"], tmp_path, first, signum,
                                           data_root)
    assert returncode == status, err[-3000:]
    line = one_line(err, f"protjepa: {said}: stopped after step", "newest checkpoint: run/checkpoints/ckpt-0.005.pt",
                    "continue with: protjepa train")
    assert line.endswith(f"{recipe} --run-dir run --resume")
    assert not list((tmp_path / "run" / "checkpoints").glob(".partial-*"))
    assert (tmp_path / "run" / ".lock").read_text() == ""


# --------------------------------------------------------------------------- 7: one line, not a traceback


def test_unreadable_recipes_and_unwritable_run_directories(trained, tmp_path, data_root, capsys):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: x\n\xff\xfe\x00garbage")
    done = cli("train", str(binary), cwd=tmp_path, data_root=data_root)
    refused(done, "binary.yaml", "not a text file")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    recipe = str(trained / "tiny.yaml")
    main_refuses(capsys, ["train", recipe, "--run-dir", str(blocker / "run")], "a_file/run", "cannot write the run")
    main_refuses(capsys, ["train", recipe, "--run-dir", str(blocker)], "a_file", "is a file, not a folder")


def _probe_fixture(folder: Path) -> tuple[Path, Path, Path]:
    """A run folder with a tiny exported ESM-2, and a spec folder with a good task and one whose
    label column holds a NaN."""
    root, specs = folder / "data", folder / "specs"
    root.mkdir()
    specs.mkdir()
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=20)) for _ in range(24)]
    (root / "good.csv").write_text("seq,y\n" + "".join(f"{s},{i}\n" for i, s in enumerate(sequences)))
    (root / "bad.csv").write_text("seq,y\n" + "".join(f"{s},{'nan' if i == 5 else i}\n"
                                                      for i, s in enumerate(sequences)))
    (root / "corpus.fa").write_text(">c\nMKV\n")
    for name in ("good", "bad"):
        (specs / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "description": name, "type": "regression", "metric": "spearman",
            "fields": {"sequence": "seq", "label": "y"}, "data": f"{name}.csv",
            "split": {"rule": "hash", "test_fraction": 0.3}}))
    run = folder / "run"
    torch.manual_seed(0)
    export_hf(ESM2(1, 16, 2), run / "export")
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "run"}))
    return root, specs, run


def test_probe_options_and_a_bad_task(tmp_path, capsys):
    root, specs, run = _probe_fixture(tmp_path)
    common = ["probe", str(run), "--spec", str(specs), "--tasks", "bad,good", "--data-root", str(root), "--no-cache",
              "--corpus", str(root / "corpus.fa")]
    done = cli(*common, "--layer", "banana", cwd=tmp_path, data_root=root)
    refused(done, "layer 'banana'", "'last', 'half' or a depth in 0..1")
    main_refuses(capsys, [*common, "--layer", "99"], "layer 99")
    usage_refuses(capsys, [*common, "--max-length", "0"], "argument --max-length", "at least 1, got '0'")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    main_refuses(capsys, [*common, "--out", str(blocker / "out")], "a_file/out", "cannot write the probe output")

    assert main([*common, "--out", str(tmp_path / "out")]) == 1  # a task failed; the others are written
    results = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    assert "error" not in results["good"] and results["good"]["n_test"] > 0, results["good"].get("error")
    assert "bad.csv:7: label 'nan' is not a finite number" in results["bad"]["error"]
    assert "bad: skipped:" in (tmp_path / "out" / "results.md").read_text()


def _results(path: Path, **values) -> Path:
    path.mkdir(parents=True)
    tasks = {name: {"type": "regression", "metric": "spearman", "value": v} for name, v in values.items()}
    (path / "results.json").write_text(json.dumps({"tasks": tasks, "settings": {}}))
    return path


def test_compare_refuses_what_it_cannot_compare(tmp_path, data_root, capsys):
    a = _results(tmp_path / "a", t1=0.5, t2=0.4)
    b = _results(tmp_path / "b", t1="high", t2=0.3)
    c = _results(tmp_path / "c", other=0.1)
    done = cli("compare", str(a), str(b), "--out", str(tmp_path / "cmp"), cwd=tmp_path, data_root=data_root)
    refused(done, "b/results.json", "tasks.t1.value: 'high' is not a finite number")
    main_refuses(capsys, ["compare", str(a), str(c), "--out", str(tmp_path / "cmp")], "no task is scored in both")
    (tmp_path / "a_file").write_text("")
    main_refuses(capsys, ["compare", str(a), str(_results(tmp_path / "d", t1=0.1)), "--out",
                          str(tmp_path / "a_file")], "a_file", "is a file, not a folder")


def test_a_plugin_that_exits_is_named(tmp_path, data_root):
    (tmp_path / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    done = cli("list", "--plugins", "quitter", cwd=tmp_path, data_root=data_root,
               env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    refused(done, "plugin module 'quitter'", "sys.exit(3)")


# --------------------------------------------------------------------------- 8: silent oddities


def test_budgets_agree_and_an_empty_one_is_an_error(trained, tmp_path, capsys):
    recipe = trained / "tiny.yaml"
    main_refuses(capsys, ["train", str(recipe), "--budget", ""], "cannot parse duration ''")
    assert load_recipe(recipe, [("budget", {"wall_clock": 90})]).budget.seconds == 90
    assert load_recipe(recipe, [("budget.steps", None), ("budget.wall_clock", "90")]).budget.seconds == 90


def test_a_truncated_gzip_corpus_is_found_at_start_up(tmp_path, data_root):
    rng = np.random.default_rng(0)
    text = "".join(f">s{i}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), size=60))}\n" for i in range(400))
    whole = gzip.compress(text.encode())
    (tmp_path / "cut.fasta.gz").write_bytes(whole[:len(whole) * 3 // 4])
    recipe = write_recipe(tmp_path / "cut.yaml", data={**TINY["data"], "train": str(tmp_path / "cut.fasta.gz"),
                                                       "valid": None, "holdout_fraction": 0.1})
    done = cli("train", str(recipe), "--run-dir", str(tmp_path / "run"), cwd=tmp_path, data_root=data_root)
    refused(done, "cut.fasta.gz", "corrupt or truncated gzip file")
    assert not list((tmp_path / "run").glob("checkpoints/*"))


# --------------------------------------------------------------------------- issue 26: YAML no file of ours holds


def _alias_bomb(levels: int = 9) -> str:
    """"Billion laughs": 9 ** levels strings from a few hundred bytes."""
    lines = [f"lol0: &l0 [{', '.join(['lol'] * 9)}]"]
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_yaml_no_file_of_ours_holds_is_refused_at_once(tmp_path, capsys):
    recipe = yaml.safe_dump(TINY, sort_keys=False)
    files = {"bomb.yaml": recipe + _alias_bomb(),
             "twice.yaml": recipe + "data: {crop: 64}\n",  # PyYAML keeps the last data: silently
             "loop.yaml": "name: x\nencoder: &e {name: esm2, more: [*e]}\n",
             "deep.yaml": "name: " + "[" * 3000 + "]" * 3000 + "\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    started = time.monotonic()
    assert main(["validate", *(str(tmp_path / name) for name in files)]) == 1
    assert time.monotonic() - started < 10  # the bomb once took minutes
    data_line = recipe.splitlines().index("data:") + 1
    assert capsys.readouterr().out.splitlines() == [
        f"FAIL {tmp_path}/bomb.yaml:{len(recipe.splitlines()) + 6}: its aliases expand to more than 100,000 values "
        "(an alias bomb?)",
        f"FAIL {tmp_path}/twice.yaml:{len(recipe.splitlines()) + 1}: key 'data' is given twice (first on line "
        f"{data_line}); YAML keeps only one",
        f"FAIL {tmp_path}/loop.yaml:2: an alias refers to a node that holds it (a recursive alias)",
        f"FAIL {tmp_path}/deep.yaml: nested too deeply"]
    # every YAML reader: task specs, and values given on the command line
    spec = tmp_path / "specs" / "twice.yaml"
    spec.parent.mkdir()
    spec.write_text("name: t\nname: u\n")
    main_refuses(capsys, ["probe", "--list", "--spec", str(spec)], "twice.yaml:2: key 'name' is given twice")
    main_refuses(capsys, ["train", str(tmp_path / "twice.yaml"), "--set", "data={crop: 64, crop: 32}"],
                 "--set data", "is not a YAML value (key 'crop' is given twice")


def test_validate_reads_text_as_train_does(tmp_path, data_root, capsys):
    recipe = yaml.safe_dump(TINY)
    (tmp_path / "utf16.yaml").write_bytes(recipe.encode("utf-16"))
    (tmp_path / "latin1.yaml").write_bytes(("description: caf\xe9\n" + recipe).encode("latin-1"))
    (tmp_path / "binary.yaml").write_bytes(b"name: x\n\xff\xfe\x00garbage")
    done = cli("validate", "utf16.yaml", cwd=tmp_path, data_root=data_root)
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout == "FAIL utf16.yaml: not a text file (byte 0 is not UTF-8); a recipe file is YAML text\n"
    assert main(["validate", str(tmp_path / "latin1.yaml"), str(tmp_path / "binary.yaml")]) == 1
    assert [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines()] == [
        "not a text file (byte 16 is not UTF-8); a recipe file is YAML text",
        "not a text file (byte 8 is not UTF-8); a recipe file is YAML text"]
    main_refuses(capsys, ["train", str(tmp_path / "utf16.yaml"), "--main-job"], "utf16.yaml", "not a text file")


# --------------------------------------------------------------------------- issue 26: validate runs train's checks


@pytest.mark.parametrize("assignment, says", [
    ("seed=-1", "seed: Input should be greater than or equal to 0"),  # Composer's seed_all raised at start
    ("objectives.0.weight=-1", "objectives[0].weight: Input should be greater than or equal to 0"),  # maximised MLM
    ("objectives.0.weight=1e300", "objectives[0].weight: Input should be less than or equal to 1000000"),
    ("objectives.0.weight=true", "objectives[0].weight: expected a number, got true"),  # read as 1
    ("optim.betas=[true, 0.9]", "optim.betas[0]: expected a number, got true"),
    ("data.packing=1", "data.packing: expected true or false, got 1"),
    ("encoder.token_dropout=0", "encoder.token_dropout: expected true or false, got 0"),  # an encoder's options
    ("objectives.1.normalize=1", "objectives[1].normalize: expected true or false, got 1"),  # an objective's
    ("optim.lr=1e400", "optim.lr: Input should be a finite number"),  # YAML 1.1 text, which pydantic read as inf
    ("budget={tokens: 1e400}", "budget.tokens"),
])
def test_validate_refuses_what_train_would_refuse(tmp_path, capsys, assignment, says):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    assert main(["validate", str(recipe), "--set", assignment]) == 1
    key = assignment.split("=")[0]
    assert capsys.readouterr().out.startswith(f"FAIL {recipe}: --set {key}: {says}")


def test_settings_that_cannot_train_are_refused_with_their_line(tmp_path, capsys, monkeypatch):
    huge_crop = write_recipe(tmp_path / "crop.yaml", data={**TINY["data"], "crop": 10_000_000})
    nothing = write_recipe(tmp_path / "nothing.yaml", objectives=[{"name": "mlm", "weight": 0}])
    ablation = write_recipe(tmp_path / "ablation.yaml", objectives=[{"name": "mlm"}, {"name": "jepa", "weight": 0}])
    assert main(["validate", str(huge_crop), str(nothing), str(ablation)]) == 1
    out = capsys.readouterr().out.splitlines()
    line = {path: YamlLines(path.read_text()).line((key,)) for path, key in ((huge_crop, "data"),
                                                                               (nothing, "objectives"))}
    assert out[0] == (f"FAIL {huge_crop}:{line[huge_crop]}: data: batch_tokens 512 is less than one row of 10000008 "
                      "tokens (crop 10000000 + <cls>/<eos>, padded to a multiple of 8)")
    assert out[1] == (f"FAIL {nothing}:{line[nothing]}: objectives: every objective has weight 0: the run would "
                      "train nothing")
    assert out[2] == (f"ok   {ablation}: tiny_hostile [mlmx1, jepax0] "
                      "(weight 0 (an ablation): jepa computed and logged, not trained on)")
    noted = []  # and the run says so in its summary
    monkeypatch.setattr("protjepa.training.trainer.train", lambda *args, notes=(), **kw: noted.extend(notes))
    assert main(["train", str(ablation), "--run-dir", str(tmp_path / "run")]) == 0
    assert noted == ["weight 0 (an ablation): jepa computed and logged, not trained on"]


def test_a_refused_run_leaves_no_folder(trained, tmp_path, capsys):
    recipe = str(trained / "tiny.yaml")
    main_refuses(capsys, ["train", recipe, "--set", "seed=-1", "--run-dir", str(tmp_path / "seed")],
                 "--set seed: seed: Input should be greater than or equal to 0")
    main_refuses(capsys, ["train", recipe, "--run-dir", str(tmp_path / "root"), "--data-root", str(tmp_path / "none")],
                 "none (data.root / --data-root): no such folder")  # refused after taking the run's lock
    assert list(tmp_path.iterdir()) == []


def test_values_from_the_command_line_are_named_as_such(trained, tmp_path, capsys):
    recipe = str(trained / "tiny.yaml")
    main_refuses(capsys, ["train", recipe, "--set", "=1"], f"{recipe}: --set '': expected a key path")
    main_refuses(capsys, ["train", recipe, "--set", "nosuch.key=1"], f"{recipe}: --set nosuch.key: nosuch: unknown key")
    main_refuses(capsys, ["train", recipe, "--budget", "1e400tok"], "--budget '1e400tok'", "positive and finite")
    with pytest.raises(UserError, match=r"tiny.yaml: override data.crop: data.crop: Input should be greater"):
        protjepa.load_recipe(recipe, {"data.crop": 2})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- issue 26: probe's and compare's flags


def test_probe_and_compare_check_their_flags_and_files_before_any_work(tmp_path, capsys, monkeypatch):
    root, specs, run = _probe_fixture(tmp_path)
    monkeypatch.chdir(tmp_path)
    common = ["probe", str(run), "--spec", str(specs), "--tasks", "good", "--data-root", str(root), "--no-cache"]
    for flag, value in (("--max-train", "0"), ("--max-train", "-5"), ("--max-test", "x"), ("--batch-tokens", "0"),
                        ("--drop-identity", "2"), ("--seed", "-1")):
        usage_refuses(capsys, [*common, flag, value], f"protjepa probe: error: argument {flag}: expected", value)
    usage_refuses(capsys, ["compare", "a", "a", "--tie", "-1"], "argument --tie: expected a finite number at least 0")
    if not torch.cuda.is_available():
        main_refuses(capsys, [*common, "--device", "cuda"], "--device cuda: torch sees no CUDA device here")
    main_refuses(capsys, [*common, "--device", "banana"], "--device 'banana': expected auto, cpu, cuda or cuda:N")
    (tmp_path / "fake.pt").write_text("not a checkpoint\n")
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 4)
    for fake in ("fake.pt", "garbage.pt"):
        line = main_refuses(capsys, ["probe", fake, "--spec", str(specs), "--data-root", str(root)],
                            f"{fake}: not a plain fair-esm checkpoint: torch.load cannot read it (")
        assert "weights_only" not in line and "Please" not in line
    (run / "recipe.yaml").write_bytes(b"\xff\xfe")  # the run names its corpus in its recipe
    main_refuses(capsys, common, "run/recipe.yaml: not a text file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "fake.pt", "garbage.pt", "run", "specs"]


def test_the_python_api_names_the_argument_it_cannot_take():
    encoder = ESM2(1, 16, 2)
    scored = {"tasks": {"t": {"metric": "spearman", "value": 0.5}}}
    calls = [
        (lambda: protjepa.build_model(5), "recipe: expected a Recipe, a recipe file or a shipped recipe's name"),
        (lambda: protjepa.compare({}, {}), "a: not a protjepa probe result (no 'tasks' mapping)"),
        (lambda: protjepa.compare({"tasks": {}}, {"tasks": {}}), "A and B: no task is scored in both"),
        (lambda: protjepa.compare(scored, scored, tie=-1), "tie -1: expected a finite number at least 0"),
        (lambda: protjepa.embed(encoder, [None]), "sequences[0]: expected a string of residue letters, got NoneType"),
        (lambda: protjepa.embed(encoder, [b"MKT"]), "sequences[0]: expected a string of residue letters, got bytes"),
        (lambda: protjepa.embed(encoder, ["MKT", ""]), "sequences[1]: an empty sequence"),  # was a row of NaN
        (lambda: protjepa.embed(encoder, ["MKJ"]), "sequences[0]: unknown residue letter 'J' at position 3"),
        (lambda: protjepa.embed(encoder, 42), "sequences: expected a list, got int"),
        (lambda: protjepa.embed(123, ["MKT"]), "encoder: expected an Encoder"),
        (lambda: protjepa.embed(encoder, ["MKT"], batch_tokens=0), "batch_tokens 0: expected a whole number"),
        (lambda: protjepa.load_encoder(None), "path: expected an encoder file or folder"),
        (lambda: protjepa.load_recipe(42), "recipe: expected a recipe file or a shipped recipe's name, got int"),
        (lambda: protjepa.load_recipe("mlm", 5), "overrides: expected a mapping or a list of overrides, got int"),
        (lambda: protjepa.probe(encoder, ["stability"], bogus_cap=1), "bogus_cap: no such probe setting"),
        (lambda: protjepa.probe(encoder, ["stability"], max_train="x"), "max_train 'x': expected a whole number"),
        (lambda: protjepa.probe(encoder, ["stability"], max_train=0), "max_train 0: expected a whole number"),
        (lambda: protjepa.probe(encoder, "no_such_task"), "unknown task 'no_such_task'"),  # one string, one task
        (lambda: protjepa.train(42), "recipe: expected a Recipe"),
    ]
    if not torch.cuda.is_available():
        calls.append((lambda: protjepa.embed(encoder, ["MKT"], device="cuda"), "device cuda: torch sees no CUDA"))
    for call, says in calls:
        with pytest.raises(UserError) as info:
            call()
        assert says in str(info.value) and "\n" not in str(info.value), (says, str(info.value))
    assert protjepa.embed(encoder, "MKTAYIAK").shape == (1, 16)  # one string: one sequence, not one per letter
    assert protjepa.load_recipe("mlm", "optim.lr=0.001").optim.lr == 0.001
    assert type(protjepa.build_model("mlm")).__name__ == "ProtJEPA"  # a name where a Recipe is wanted


# --------------------------------------------------------------------------- issue 36: data that names code


def rewrite_checkpoint(path: Path, edit) -> Path:
    """``edit`` our own checkpoint's contents in place, and its sha256 with it (as someone who shares it could)."""
    data = torch.load(path, weights_only=False)
    edit(data)
    torch.save(data, path)
    digest_path(path).write_text(f"{file_digest(path)}  {path.name}\n")
    return path


def copy_run(trained: Path, to: Path) -> Path:
    shutil.copytree(trained / "run", to, ignore=shutil.ignore_patterns(".lock"))
    return to


def test_an_export_runs_no_code_without_trust_code(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "PWNED"
    export = save_encoder(ESM2(1, 16, 2), tmp_path / "export",
                          {"name": "esm2", "num_layers": 1, "embed_dim": 16, "attention_heads": 2})
    (export / "encoder.yaml").write_text(yaml.safe_dump({"_component_": "os.system", "command": f"touch {marker}"}))
    monkeypatch.chdir(tmp_path)
    says = (f"{export / 'encoder.yaml'}:1: _component_: names code to import (os.system)", "--trust-code",
            "trust_code=True")
    main_refuses(capsys, ["probe", str(export), "--tasks", "stability", "--no-cache"], *says)
    for call in (lambda: protjepa.load_encoder(export), lambda: protjepa.embed(str(export), ["MKT"]),
                 lambda: protjepa.probe(export, ["stability"], max_train=2)):
        with pytest.raises(UserError) as info:
            call()
        assert all(needle in str(info.value) for needle in says) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="trust_code: expected True or False, got str"):
        protjepa.load_encoder(export, trust_code="yes")
    assert not marker.exists() and not (tmp_path / "probe").exists()


def test_a_run_folder_or_checkpoint_runs_no_code_without_trust_code(trained, tmp_path, capsys, monkeypatch,
                                                                   data_root):
    ran = tmp_path / "RAN"
    (tmp_path / "greeter.py").write_text(f"from pathlib import Path\nPath({str(ran)!r}).touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = copy_run(trained, tmp_path / "run")
    newest = run / "checkpoints" / "ckpt-1.000.pt"

    def with_plugin(text: str) -> str:
        return yaml.safe_dump({**yaml.safe_load(text), "plugins": ["greeter"]}, sort_keys=False)

    def plugin_in_record(data):  # the recipe a checkpoint carries names a module to import
        data["state"]["callbacks"]["RecipeRecord"]["recipe"] = with_plugin(data["state"]["callbacks"]["RecipeRecord"]
                                                                           ["recipe"])

    rewrite_checkpoint(newest, plugin_in_record)
    line = YamlLines(with_plugin((run / "recipe.yaml").read_text())).line(("plugins", 0))
    from_checkpoint = (f"{newest} (the recipe it was trained with):{line}: plugins[0]: names code to import (greeter)",
                       "--trust-code")
    main_refuses(capsys, ["probe", str(newest), "--tasks", "stability", "--no-cache", "--out", str(tmp_path / "p")],
                 *from_checkpoint)
    main_refuses(capsys, ["readout", str(run), "--sequences", "4"], *from_checkpoint)
    with pytest.raises(UserError, match=re.escape(from_checkpoint[0])):
        protjepa.load_encoder(newest)

    rewrite_checkpoint(newest, lambda data: data["state"]["callbacks"].pop("RecipeRecord"))  # one from before the
    (run / "recipe.yaml").write_text(with_plugin((run / "recipe.yaml").read_text()))           # record: recipe.yaml
    main_refuses(capsys, ["readout", str(run), "--sequences", "4"],
                 f"{run / 'recipe.yaml'}:{line}: plugins[0]: names code to import (greeter)", "--trust-code")
    assert not ran.exists() and not (run / "readout.json").exists()
    # Said so, the code runs (a plugin must, for a recipe that needs it) and the readout is written.
    assert main(["readout", str(run), "--sequences", "4", "--data-root", str(data_root), "--trust-code"]) == 0
    assert ran.exists() and (run / "readout.json").is_file()


# --------------------------------------------------------------------------- issue 36: reads that never end


def test_data_that_is_not_a_regular_file_is_refused_before_it_is_opened(trained, tmp_path, capsys, data_root):
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    # in a process of its own: a read of a named pipe with no writer blocks for ever (it once did, in two threads)
    recipe = write_recipe(tmp_path / "fifo.yaml", data={**TINY["data"], "train": str(fifo), "valid": None,
                                                        "holdout_fraction": 0.1})
    done = cli("train", str(recipe), "--run-dir", str(tmp_path / "run"), cwd=tmp_path, data_root=data_root, timeout=90)
    refused(done, f"{fifo}: a named pipe (FIFO), not a regular file: a data file must be one")
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="/dev/zero: a character device, not a regular file"):  # it once filled 17 GB
        data_files(DataConfig(train="/dev/zero", valid=None), tmp_path)
    main_refuses(capsys, ["probe", "--list", "--spec", str(fifo)], f"{fifo}: a named pipe (FIFO)", "task spec file")
    assert main(["validate", str(fifo)]) == 1
    assert capsys.readouterr().out.startswith(f"FAIL {fifo}: a named pipe (FIFO), not a regular file")

    (tmp_path / "probe").mkdir()
    root, specs, run = _probe_fixture(tmp_path / "probe")
    for name, train in (("piped", str(fifo)), ("zeros", "/dev/zero")):
        (specs / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "description": name, "type": "regression", "metric": "spearman",
            "fields": {"sequence": "seq", "label": "y"}, "train": {"file": train, "format": "csv"},
            "test": "good.csv"}))
    done = cli("probe", str(run), "--spec", str(specs), "--tasks", "piped,zeros", "--data-root", str(root),
               "--no-cache", "--corpus", str(root / "corpus.fa"), "--out", str(tmp_path / "out"), cwd=tmp_path,
               data_root=root, timeout=90)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    tasks = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    assert tasks["piped"]["error"].startswith(f"{fifo}: a named pipe (FIFO), not a regular file")
    assert tasks["zeros"]["error"].startswith("/dev/zero: a character device, not a regular file")


def test_a_line_or_a_record_longer_than_any_protein_is_refused_at_its_line(tmp_path):
    flat = tmp_path / "flat.fasta"
    flat.write_text(">x\n" + "A" * 150_000)  # no line break: read whole, a corrupt file of GBs filled the memory
    with pytest.raises(FastaError, match=r"flat\.fasta:2: a line of more than 100,000 characters, longer than any "
                                         r"protein: .*data\.max_residues"):
        list(FastaReader(flat))
    wrapped = tmp_path / "wrapped.fasta"
    wrapped.write_text(">y\n" + "ACDEFGHIKL\n" * 12 + ">z\nMK\n")  # 120 residues in lines of 10
    with pytest.raises(FastaError, match=r"wrapped\.fasta:1: a record of more than 100 residues"):
        list(FastaReader(wrapped, max_residues=100))
    assert [len(r.sequence) for r in FastaReader(wrapped, max_residues=120)] == [120, 2]
    data = DataConfig(train=str(wrapped), valid=None, crop=32, batch_tokens=512, max_residues=100)  # the recipe's
    with pytest.raises(FastaError, match="a record of more than 100 residues"):
        next(iter(make_corpus(data, None, "train", root=tmp_path)))
    rows = tmp_path / "rows.csv"
    rows.write_text("seq,y\nMKV,1\n" + "M" * 2000 + ",2\n")
    with pytest.raises(TaskDataError, match=r"rows\.csv:3: a line of more than 1,600 characters"):
        read_table(TableSpec(file=str(rows)), {"sequence": "seq", "label": "y"}, tmp_path, 100)


def test_a_label_pattern_that_backtracks_without_end_is_stopped_at_its_label(tmp_path):
    (tmp_path / "ec.csv").write_text("seq,ec\nMKV,aaa\nMKW," + "a" * 60 + "!\n")
    spec = {"name": "ec", "description": "ec", "type": "multiclass", "metric": "accuracy", "data": "ec.csv",
            "fields": {"sequence": "seq", "label": "ec"}, "split": {"rule": "hash"}}
    with pytest.raises(TaskDataError, match=r"ec\.csv:3: label_pattern '\(a\|aa\)\+\$' ran for over 1 s on this "
                                            r"61-character label: a pattern that backtracks without end"):
        load_task(parse_spec({**spec, "label_pattern": "(a|aa)+$"}, "ec.yaml"), tmp_path)
    # the pattern: Python's re backtracks for hours over 41 characters; this engine answers at once
    with pytest.raises(TaskDataError, match=r"ec\.csv:3: label .* has no match of label_pattern"):
        load_task(parse_spec({**spec, "label_pattern": "^(a+)+$"}, "ec.yaml"), tmp_path)


def test_sigterm_ends_a_run_whose_thread_is_blocked_in_a_read(tmp_path, data_root):
    fifo = tmp_path / "never_written"
    os.mkfifo(fifo)
    (tmp_path / "blocker.py").write_text(f"import threading\nthreading.Thread(target=open, args=({str(fifo)!r},))"
                                         ".start()  # not a daemon: it holds the interpreter's exit\n")
    recipe = long_recipe(tmp_path / "long.yaml", plugins=["blocker"])
    returncode, _, err = stop_once_written(["train", str(recipe), "--run-dir", "run"], tmp_path,
                                           tmp_path / "run" / "checkpoints" / "ckpt-0.005.pt", signal.SIGTERM,
                                           data_root, PYTHONPATH=str(tmp_path))
    assert returncode == 143, err[-3000:]
    assert "protjepa: stopped by SIGTERM: stopped after step" in err and "Traceback" not in err
    assert "protjepa: stopped by SIGTERM: still not ended 10 s after the signal (a thread blocked in a read?): " \
           "ended now" in err
    assert (tmp_path / "run" / ".lock").read_text() == ""


# --------------------------------------------------------------------------- issue 36: tracebacks


def test_readout_checks_it_can_write_before_the_work_and_a_failed_write_is_one_line(trained, tmp_path, capsys,
                                                                                  monkeypatch):
    run = copy_run(trained, tmp_path / "run")
    touch = Path.touch

    def read_only(path, *args, **kwargs):  # the answer of a read-only file system (root writes anywhere here)
        if path.parent == run:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return touch(path, *args, **kwargs)

    monkeypatch.setattr(Path, "touch", read_only)
    assert main(["readout", str(run), "--sequences", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before any score was computed or printed
    one_line(captured.err, f"{run}: cannot write the run folder (readout.json) there: Read-only file system")
    (run / "readout.json").mkdir()
    with pytest.raises(UserError, match=r"readout\.json: cannot write the readout: Is a directory"):
        write_readout({}, run)
    assert sorted(p.name for p in run.glob(".readout*")) == []


def test_probe_tasks_that_cannot_be_scored_say_why_and_a_copied_test_set_is_flagged(tmp_path, capsys):
    root, specs, run = _probe_fixture(tmp_path)
    rows = (root / "good.csv").read_text().splitlines()
    (root / "header.csv").write_text(rows[0] + "\n")
    (root / "one.csv").write_text("seq,y\n" + "".join(f"{r.split(',')[0]},a\n" for r in rows[1:13]))
    (root / "two.csv").write_text("seq,y\n" + "".join(f"{r.split(',')[0]},{'ab'[i % 2]}\n"
                                                      for i, r in enumerate(rows[13:])))
    (root / "all_test.csv").write_text("seq,y,part\n" + "".join(f"{r},test\n" for r in rows[1:]))
    tasks = {"header_only": {"data": "header.csv", "split": {"rule": "hash"}},
             "one_class": {"type": "binary", "metric": "auc", "positive": "b", "train": "one.csv", "test": "two.csv"},
             "no_train": {"data": "all_test.csv", "fields": {"sequence": "seq", "label": "y", "part": "part"},
                          "split": {"rule": "column", "field": "part", "train": "train", "test": "test"}},
             "same_file": {"train": "good.csv", "test": "good.csv"}}
    for name, changes in tasks.items():
        (specs / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "description": name, "type": "regression", "metric": "spearman",
            "fields": {"sequence": "seq", "label": "y"}, **changes}))
    assert main(["probe", str(run), "--spec", str(specs), "--tasks", ",".join(tasks), "--data-root", str(root),
                 "--no-cache", "--corpus", str(root / "corpus.fa"), "--out", str(tmp_path / "out")]) == 1
    log = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    assert results["header_only"]["error"] == f"{root / 'header.csv'}: no records, only the header row"
    assert results["one_class"]["error"] == (  # it scored auc 0.5000 and exit 0
        f"{specs / 'one_class.yaml'}: task one_class: every training record is of one class (a): a probe cannot "
        "learn to tell classes apart (check its labels and split)")
    assert results["no_train"]["error"].endswith("task no_train: no training records left to probe (check its files, "
                                                 "split and caps)")
    assert results["same_file"]["value"] is not None and results["same_file"]["notes"] == [
        "WARNING: every test sequence is also a training sequence (good.csv and good.csv): the score is on records "
        "the probe was fit on (train and test the same file?)"]
    assert "note: WARNING: every test sequence is also a training sequence" in log


def test_a_full_disk_at_the_export_is_one_line_and_resume_finishes_the_run(tmp_path, capsys, monkeypatch, data_root):
    from safetensors import SafetensorError

    from protjepa.encoders import weights

    train_file = "pretrain_swissprot50/swissprot2014_50_valid.fasta.gz"
    recipe = write_recipe(tmp_path / "tiny.yaml", data={**TINY["data"], "train": train_file, "valid": train_file})

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"part of the weights")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                              'space left on device" })')

    monkeypatch.setattr(weights, "save_file", full_disk)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--run-dir", str(run)]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err, "the run trained to its end, but its export could not be written",
                    "model.safetensors: cannot write: Error while serializing", "No space left on device",
                    "its checkpoints are intact (newest: ", f"continue with: protjepa train {recipe} --run-dir {run} "
                    "--resume")
    assert line.startswith("protjepa: error: ")
    # data.valid the same file as data.train: said in the run's first lines
    assert f"warning: data.valid ({data_root / train_file}) holds the same records as data.train" in captured.out
    assert not (run / ".export.tmp").exists() and not (run / "export").exists()
    monkeypatch.undo()
    assert main(["train", str(recipe), "--run-dir", str(run), "--resume"]) == 0
    assert (run / "export" / "model.safetensors").is_file() and not (run / ".export.tmp").exists()
    assert held_out_on_training_records(load_recipe(recipe, [("data.valid", None)]), str(data_root)) == []


def test_bench_checks_its_output_paths_before_benchmarking(capsys):
    main_refuses(capsys, ["bench", "--quick", "--json", "/proc/nope/bench.json"],
                 "/proc/nope: cannot write the folder of the --json output there")
    main_refuses(capsys, ["bench", "--quick", "--curves", "/proc/nope/curves.png"],
                 "/proc/nope: cannot write the folder of the --curves plot there")


# --------------------------------------------------------------------------- issue 36: silent wrongs


def _experiment(tmp_path: Path, **changes) -> Path:
    write_recipe(tmp_path / "tiny.yaml")
    spec = {"name": "hostile", "baseline": "a", "budget": {"steps": 3}, "output": str(tmp_path / "out"),
            "variants": [{"recipe": "tiny.yaml", "name": "a"}, {"recipe": "tiny.yaml", "name": "b"}],
            "probe": {"tasks": ["stability"]}, **changes}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_experiment_seeds_names_and_probe_settings_are_checked_before_any_run(tmp_path, capsys):
    bad = {"seeds": {"variants": [{"recipe": "tiny.yaml", "name": "a"},
                                  {"recipe": "tiny.yaml", "name": "b", "seeds": [-1]}]},  # ran 33 s, then Composer
           "dots": {"variants": [{"recipe": "tiny.yaml", "name": "a"}, {"recipe": "tiny.yaml", "name": ".."}]},
           "base_seed": {"base": {"recipe": "tiny.yaml", "budget": {"steps": 1}, "seed": 2 ** 32}},
           "layer": {"probe": {"tasks": ["stability"], "layer": "banana"}},
           "probe_seed": {"probe": {"tasks": ["stability"], "seed": -1}}}
    says = {"seeds": "variants[1].seeds[0]: Input should be greater than or equal to 0",
            "dots": "variants[1].name: String should match pattern",  # it trained into <output>/runs/../seed0
            "base_seed": "base.seed: Input should be less than 4294967296",
            "layer": "probe.layer",
            "probe_seed": "probe.seed: Input should be greater than or equal to 0"}
    for name, changes in bad.items():
        folder = tmp_path / name
        folder.mkdir()
        path = _experiment(folder, **changes)
        assert main(["experiment", str(path), "--dry-run"]) == 2
        one_line(capsys.readouterr().err, str(path), says[name])
    named = write_recipe(tmp_path / "named.yaml", name="../elsewhere")
    assert main(["validate", str(named)]) == 1
    assert "name: '../elsewhere' names the run folder (train.run_dir: runs/{name}): give a name, with no '..' part" \
        in capsys.readouterr().out


def test_readout_reads_its_own_run_with_the_recipe_the_checkpoint_was_trained_with(trained, tmp_path, capsys,
                                                                                  data_root):
    run, other = copy_run(trained, tmp_path / "run"), copy_run(trained, tmp_path / "other")
    before = read_out(run, sequences=4, data_root=str(data_root))
    main_refuses(capsys, ["readout", str(run), "--checkpoint", str(other / "checkpoints" / "ckpt-1.000.pt")],
                 f"{other / 'checkpoints' / 'ckpt-1.000.pt'}: not a checkpoint of {run}",
                 "read out the run it belongs to")  # it printed "RUN: ckpt-1.000.pt" and wrote the other's scores
    assert not (run / "readout.json").exists()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["masking"]["rate"], recipe["objectives"][1]["loss"] = 0.9, "mse"
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    after = read_out(run, sequences=4, data_root=str(data_root))
    assert (after["mlm"], after["latent"]) == (before["mlm"], before["latent"])  # masked and scored as trained
    said = (f"{run / 'recipe.yaml'} says objectives[1].loss: mse, but ckpt-1.000.pt was trained with "
            "objectives[1].loss: cosine: read with the checkpoint's own recipe")  # the first of the two edits
    assert before["notes"] == [] and after["notes"] == [said]
    notes = []
    load_encoder(run / "checkpoints" / "ckpt-1.000.pt", notes=notes)  # protjepa probe prints it the same way
    assert notes == [said]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU refuses")
def test_validate_refuses_what_train_refuses_on_this_machine(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    for assignment, says in (("data.batch_tokens=fill", "data.batch_tokens: fill sizes the step to a GPU's memory, "
                                                        "and this run is on the CPU"),
                             ("train.device=cuda", "train.device: cuda, but torch sees no CUDA device here")):
        assert main(["validate", str(recipe), "--set", assignment]) == 1
        key = assignment.split("=")[0]
        assert capsys.readouterr().out.startswith(f"FAIL {recipe}: --set {key}: {says}")
        main_refuses(capsys, ["train", str(recipe), "--set", assignment, "--run-dir", str(tmp_path / "run")],
                     f"{recipe}: --set {key}: {says}")  # the same words


def test_a_resumed_run_goes_on_as_it_started(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    recipe, record = str(trained / "tiny.yaml"), (run / "recipe.yaml").read_text()
    main_refuses(capsys, ["train", recipe, "--run-dir", str(run), "--resume", "--set", "optim.lr=0.1"],
                 f"{run / 'checkpoints' / 'ckpt-1.000.pt'}: the run was trained with optim.lr: 0.0003, and resumed "
                 "with optim.lr: 0.1", "train the changed recipe in another --run-dir")  # recipe.yaml said 0.1
    assert (run / "recipe.yaml").read_text() == record
    newest = rewrite_checkpoint(run / "checkpoints" / "ckpt-1.000.pt",
                                lambda data: data["state"]["metadata"].update(world_size=2))
    main_refuses(capsys, ["train", recipe, "--run-dir", str(run), "--resume"],
                 f"{newest}: written by a run of 2 process(es), resumed on 1", "resume with 2 (composer -n 2")
    # how and where it runs may change: the finished run resumed only reports
    run = copy_run(trained, tmp_path / "again")
    assert main(["train", recipe, "--run-dir", str(run), "--resume", "--set", "train.log_every=2"]) == 0
    assert "its budget was already spent, nothing left to train" in capsys.readouterr().out


def test_a_folder_holding_a_run_is_not_trained_into_without_resume(trained, tmp_path, capsys):
    recipe = str(trained / "tiny.yaml")
    run = copy_run(trained, tmp_path / "run")
    shutil.rmtree(run / "checkpoints")  # a finished run's: trained into again, it lost its export and records
    (run / "readout.json").write_text("{}\n")
    other = write_recipe(tmp_path / "other.yaml", optim={"lr": 1e-3})
    record = (run / "recipe.yaml").read_text()
    main_refuses(capsys, ["train", str(other), "--run-dir", str(run)],
                 f"{run}: already holds a run's records (curves.png, export, metrics.jsonl, provenance.json, "
                 "readout.json, recipe.yaml); pass --resume to go on with that run, or another --run-dir")
    main_refuses(capsys, ["train", str(other), "--run-dir", str(run), "--resume"],
                 "no checkpoint to resume from", "holds what a run writes later (curves.png, export, readout.json")
    assert (run / "recipe.yaml").read_text() == record and (run / "export").is_dir()
    # a run stopped before its first checkpoint: --resume (what its stop line says) starts it again there
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    for name in ("recipe.yaml", "provenance.json", "metrics.jsonl"):
        shutil.copy(trained / "run" / name, stopped / name)
    main_refuses(capsys, ["train", recipe, "--run-dir", str(stopped)], "already holds a run's records")
    assert main(["train", recipe, "--run-dir", str(stopped), "--resume"]) == 0
    assert "the run had stopped before its first checkpoint: started again from step 0" in capsys.readouterr().out
    assert (stopped / "checkpoints" / "ckpt-1.000.pt").is_file()


# --------------------------------------------------------------------------- issue 36: misleading messages


def test_a_byte_order_mark_is_read_past(tmp_path):
    fasta = tmp_path / "bom.fasta"
    fasta.write_bytes("\ufeff>a first\nMKV\n".encode())  # once: "line 1: sequence data before the first '>'"
    assert [(r.id, r.sequence) for r in FastaReader(fasta)] == [("a", "MKV")]
    table = tmp_path / "bom.csv"
    table.write_bytes("\ufeffseq,y\nMKV,1\n".encode())  # else the first column is named '\ufeffseq'
    assert read_table(TableSpec(file=str(table)), {"sequence": "seq"}, tmp_path, 100)[0] == {"sequence": ["MKV"]}


def test_a_run_dir_that_is_a_broken_link_is_named_as_such(trained, tmp_path, capsys):
    link = tmp_path / "runs"
    link.symlink_to(tmp_path / "missing")  # once: "File exists"
    main_refuses(capsys, ["train", str(trained / "tiny.yaml"), "--run-dir", str(link)],
                 f"{link}: the run directory is a symbolic link to {tmp_path / 'missing'}, which does not exist")
    main_refuses(capsys, ["train", str(trained / "tiny.yaml"), "--run-dir", str(link / "one")],
                 f"{link}: the run directory would be under a symbolic link to")


def test_an_installed_plugin_that_fails_to_import_is_named_not_the_recipe(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('half-installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = metadata.EntryPoint(name="broken", value="broken_plugin", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [entry])
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    recipe = write_recipe(tmp_path / "fine.yaml")
    assert main(["validate", str(recipe)]) == 1
    assert capsys.readouterr().out == ("FAIL plugin entry point 'broken' (broken_plugin): failed while importing: "
                                       f"RuntimeError: half-installed (an installed package's plugin, not {recipe})\n")


# --------------------------------------------------------------------------- issue 36: an experiment stopped


def test_sigterm_stops_an_experiment_saying_where_and_how_to_resume(tmp_path, data_root):
    path = _experiment(tmp_path, budget={"wall_clock": "120s"},
                       set={"train.checkpoint_at": [0.005, 1.0], "train.log_every": 50})
    first = tmp_path / "out" / "runs" / "a" / "seed0" / "checkpoints" / "ckpt-0.005.pt"
    returncode, _, err = stop_once_written(["experiment", str(path)], tmp_path, first, signal.SIGTERM, data_root)
    assert returncode == 143, err[-3000:]  # it printed nothing
    line = one_line(err, "protjepa: stopped by SIGTERM: while training a/seed0 (stopped after step",
                    f"newest checkpoint: {first}", "what had finished is kept",
                    f"run the same command again to resume it: protjepa experiment {path}")
    assert line.endswith(str(path))
