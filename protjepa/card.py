"""The model card of a run's export: ``export/README.md``, made from the run folder (its recipe,
budget, data and final losses; its probe results once ``protjepa probe RUN`` has written them),
with how to load the encoder: transformers for ESM-2's Hugging Face folder, protjepa otherwise.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from protjepa import __version__
from safetensors import safe_open

from protjepa.encoders.weights import HF_CONFIG, WEIGHTS, write_text
from protjepa.provenance import FILE as PROVENANCE

CARD = "README.md"


def _final_losses(run_dir: Path) -> dict[str, float]:
    """The last training record's losses."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    train = [json.loads(line) for line in path.read_text().splitlines() if '"kind": "train"' in line]
    return {k: v for k, v in (train[-1] if train else {}).items() if k.endswith("loss")}


def _encoder(encoder: dict, export: Path) -> str:
    """```esm2` (6 layers x 320 wide, 20 attention heads, 7.84M parameters)``: what the export holds, from the
    resolved recipe's sizes (it names no preset they override) and the weights file."""
    sizes = []
    if {"num_layers", "embed_dim"} <= set(encoder):
        sizes.append(f"{encoder['num_layers']} layers x {encoder['embed_dim']} wide")
    if "attention_heads" in encoder:
        sizes.append(f"{encoder['attention_heads']} attention heads")
    if (export / WEIGHTS).is_file():
        with safe_open(export / WEIGHTS, "pt") as weights:
            count = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
        sizes.append(f"{count / 1e6:.2f}M parameters" if count >= 100_000 else f"{count:,} parameters")
    return f"`{encoder.get('name') or encoder.get('_component_')}`" + (f" ({', '.join(sizes)})" if sizes else "")


def _probe(run_dir: Path) -> list[str]:
    path = run_dir / "probe" / "results.json"
    if not path.is_file():
        return []
    tasks = json.loads(path.read_text()).get("tasks", {})
    rows = [f"| {name} | {r.get('metric')} | {'n/a' if r.get('value') is None else format(r['value'], '.4f')} |"
            for name, r in sorted(tasks.items())]
    return ["## Probe results", "", "Frozen-embedding probes (`protjepa probe`):", "", "| task | metric | value |",
            "|---|---|---|", *rows, ""]


def _loading(export: Path) -> list[str]:
    if (export / HF_CONFIG).is_file():
        return ["```python", "from transformers import AutoTokenizer, EsmModel", "",
                'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")',
                'model = EsmModel.from_pretrained("PATH/TO/THIS/FOLDER")',
                'hidden = model(**tokenizer(["MKTAYIAKQR"], return_tensors="pt")).last_hidden_state', "```", "",
                "or `protjepa.load_encoder(\"PATH/TO/THIS/FOLDER\")`, or the same folder as a recipe's "
                "`encoder.checkpoint`."]
    return ["This encoder is in protjepa's native format (`encoder.yaml`, the recipe's `encoder:` section, beside "
            "`model.safetensors`), which builds the encoder and loads its weights:", "", "```python",
            "import protjepa", "", 'encoder = protjepa.load_encoder("PATH/TO/THIS/FOLDER")',
            'vectors = protjepa.embed(encoder, ["MKTAYIAKQR"])', "```"]


def write_card(run_dir: Path, export: Path) -> Path:
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    record = json.loads((run_dir / PROVENANCE).read_text()) if (run_dir / PROVENANCE).is_file() else {}
    budget = ", ".join(f"{k} {v}" for k, v in recipe.get("budget", {}).items())
    objectives = ", ".join(f"{o.get('id', o['name'])} x {o.get('weight', 1.0):g}" for o in recipe["objectives"])
    data = [f"- {role}: `{Path(f['path']).name}`, {f['bytes']:,} bytes, sha256 `{f['sha256'][:16]}...`"
            for role, f in record.get("data", {}).items()]
    losses = [f"- {k}: {v:.4f}" for k, v in _final_losses(run_dir).items()]
    lines = [
        "---", "library_name: " + ("transformers" if (export / HF_CONFIG).is_file() else "protjepa"),
        "tags: [protein, protein-language-model, protjepa]", "---", "",
        f"# {recipe['name']}", "", recipe.get("description") or "", "",
        f"Trained with protjepa {__version__}: encoder {_encoder(recipe['encoder'], export)}, objectives {objectives}, "
        f"budget {budget}. The whole recipe, every default filled in, is below.", "",
        "## Data", "", *(data or ["- not recorded"]), "",
        "## Final training losses", "", *(losses or ["- not recorded"]), "",
        *_probe(run_dir),
        "## Loading", "", *_loading(export), "",
        "## Recipe", "", "```yaml", (run_dir / "recipe.yaml").read_text().rstrip(), "```", "",
    ]
    path = export / CARD
    write_text(path, "\n".join(lines))
    return path
