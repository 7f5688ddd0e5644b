"""A pip user's protjepa: the wheel, built into a temporary folder, installed into a fresh virtual
environment that reuses this one's torch and the other run-time packages (a path file, as
--system-site-packages would over a torch-only environment), driven from a folder outside the
checkout: the shipped recipes, a short training run on a FASTA file of the user's, a probe whose
leakage check finds that corpus, and the README's Python example."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import venv
from pathlib import Path

import pytest

from test_api import readme_example, write_fasta
from wheels import REPO, build_wheel

RUNTIME = ("torch", "composer", "transformers", "tensorboard", "torchtune", "sklearn", "pydantic")


def site_folders() -> list[str]:
    """The folders this environment imports the run-time packages from (never the checkout's root,
    which would import its protjepa; a .venv inside the checkout is fine: the editable install's
    path file there is not read when its folder is only listed in another path file)."""
    folders = {Path(importlib.util.find_spec(name).origin).parents[1] for name in RUNTIME}
    return sorted(str(f) for f in folders if f != REPO)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "runtime.pth").write_text("\n".join(site_folders()) + "\n")
    done = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return env_dir


def run(env_dir: Path, cwd: Path, data_root: Path, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PROTJEPA_DATA=str(data_root), PROTJEPA_CACHE=str(cwd / ".cache"), PATH=f"{env_dir / 'bin'}:{env['PATH']}")
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_a_pip_user_trains_probes_and_scripts_from_outside_the_checkout(installed, tmp_path, data_root):
    home = tmp_path / "elsewhere"
    home.mkdir()
    where = run(installed, home, data_root, "python", "-c", "import protjepa; print(protjepa.__file__, protjepa.__version__)")
    assert where.stdout.startswith(str(installed)), where.stdout  # the wheel's copy, not the checkout's
    assert "mlm_jepa_masked " in run(installed, home, data_root, "protjepa", "recipes").stdout
    assert run(installed, home, data_root, "protjepa", "validate", "experiments/smoke").stdout.startswith("ok ")

    write_fasta(home / "small.fasta", data_root)
    run(installed, home, data_root, "protjepa", "train", "mlm_jepa_masked", "--budget", "20s",
        "--data-root", str(home), "--set", "data.train=small.fasta", "--set", "data.valid=null",
        "--set", "data.crop=64", "--set", "data.batch_tokens=1024", "--set", "train.device=cpu",
        "--set", "train.monitor_sequences=8", "--set", "train.threads=1")
    run_dir = home / "runs" / "mlm_jepa_masked"
    assert (run_dir / "export" / "model.safetensors").is_file() and (run_dir / "provenance.json").is_file()

    # The task data lie elsewhere than the corpus: the leakage check finds the corpus the run recorded.
    probed = run(installed, home, data_root, "protjepa", "probe", str(run_dir), "--tasks", "stability",
                 "--max-train", "200", "--max-test", "100", "--data-root", str(data_root))
    assert "leakage against 1 corpus file(s)" in probed.stdout
    assert (run_dir / "probe" / "results.json").is_file()
    card = (run_dir / "export" / "README.md").read_text()
    assert "# mlm_jepa_masked" in card and "| stability | spearman |" in card and "EsmModel.from_pretrained" in card

    write_fasta(home / "my_proteins.fasta", data_root)
    example = run(installed, home, data_root, "python", "-c", readme_example())
    assert example.stdout.strip()
