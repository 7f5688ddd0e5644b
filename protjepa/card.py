"""The model card of a run's export: ``export/README.md``, made from the run folder (its recipe,
budget, data and final losses; its probe results once ``protjepa probe RUN`` has written them),
with how to load the encoder: transformers for ESM-2's Hugging Face folder, protjepa otherwise.

The card leads with the encoder that was trained, read from the resolved recipe's sizes and the
weights file. The recipe's free-text description follows as the recipe's own words, with a note
where it names a preset or a parameter count this encoder does not have (a recipe whose sizes
override ``encoder.preset`` keeps the preset's name in its description).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from protjepa import __version__
from safetensors import safe_open

from protjepa.encoders.esm2 import PRESETS as ESM2_PRESETS
from protjepa.encoders.modern import PRESETS as MODERN_PRESETS
from protjepa.encoders.weights import HF_CONFIG, WEIGHTS, write_text
from protjepa.provenance import FILE as PROVENANCE

SIZE_FIELDS = ("num_layers", "embed_dim", "attention_heads")
# A parameter count a description names ("8M", "0.8M-parameter", "1.5B model", "a 35M encoder."): followed by
# a word for a model or its parameters, or by no word ("2M steps", "1B tokens" count other things); and how far
# from the weights' count it may be: presets' names round their counts (ESM-2 35M has 34.0M parameters).
NAMED_COUNT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?([MB])(?!\w)"
                         r"(?=[\s-]*(?:param\w*|model|encoder|network|transformer)\b|\s*(?:[^\w\s-]|$))",
                         re.IGNORECASE)
COUNT_TOLERANCE = 0.10

CARD = "README.md"


def _final_losses(run_dir: Path) -> dict[str, float]:
    """The last training record's losses."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    train = [json.loads(line) for line in path.read_text().splitlines() if '"kind": "train"' in line]
    return {k: v for k, v in (train[-1] if train else {}).items() if k.endswith("loss")}


def _parameter_count(export: Path) -> int | None:
    """The weights file's parameters; None without one."""
    if not (export / WEIGHTS).is_file():
        return None
    with safe_open(export / WEIGHTS, "pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def _parameters(count: int) -> str:
    return f"{count / 1e6:.2f}M parameters" if count >= 100_000 else f"{count:,} parameters"


def _encoder(encoder: dict, count: int | None) -> str:
    """```esm2` (6 layers x 320 wide, 20 attention heads, 7.84M parameters)``: what the export holds, from the
    resolved recipe's sizes (it names no preset they override) and the weights' parameter ``count``."""
    sizes = []
    if {"num_layers", "embed_dim"} <= set(encoder):
        sizes.append(f"{encoder['num_layers']} layers x {encoder['embed_dim']} wide")
    if "attention_heads" in encoder:
        sizes.append(f"{encoder['attention_heads']} attention heads")
    if count is not None:
        sizes.append(_parameters(count))
    return f"`{encoder.get('name') or encoder.get('_component_')}`" + (f" ({', '.join(sizes)})" if sizes else "")


def description_mismatches(description: str, encoder: dict, count: int | None) -> list[str]:
    """The presets and parameter counts ``description`` names that the trained encoder (the resolved recipe's
    ``encoder`` sizes, ``count`` parameters) does not have, each as written there (a preset with its sizes). A
    preset is found by its name (``esm2_8m``, also written ``ESM-2 8M``) and checked by its sizes (a
    ``_component_`` encoder, which has none, by the count its name gives); a count (``8M``) matches within 10%
    of the weights' count."""
    found: list[str] = []
    preset_spans: list[tuple[int, int]] = []
    for preset, sizes in {**ESM2_PRESETS, **MODERN_PRESETS}.items():
        family, size = preset.split("_")
        written = re.compile(rf"(?<!\w){family.replace('2', '-?2')}[\s_-]?{size}(?!\w)", re.IGNORECASE)
        for match in written.finditer(description):
            preset_spans.append(match.span())
            if all(field in encoder for field in SIZE_FIELDS):
                differs = any(encoder[field] != value for field, value in sizes.items())
            else:
                differs = count is not None and not _near(float(size[:-1]) * 1e6, count)
            written_as = "" if match.group(0).lower() == preset else f"{preset}: "
            note = f"{match.group(0)} ({written_as}{sizes['num_layers']} layers x {sizes['embed_dim']})"
            if differs and note not in found:
                found.append(note)
    if count is None:
        return found
    for match in NAMED_COUNT.finditer(description):
        if any(start <= match.start() < end for start, end in preset_spans):
            continue  # part of a preset's name, judged as the preset
        named = float(match.group(1)) * (1e6 if match.group(2).upper() == "M" else 1e9)
        if not _near(named, count) and match.group(0) not in found:
            found.append(match.group(0))
    return found


def _near(named: float, count: int) -> bool:
    return abs(named - count) <= COUNT_TOLERANCE * count


def _description(description: str, encoder: dict, count: int | None) -> list[str]:
    """The recipe's description, as the recipe's, and a note when it names what this encoder is not."""
    if not description.strip():
        return []
    lines = ["The recipe's description:", "", *(f"> {line}" for line in description.strip().splitlines()), ""]
    mismatches = description_mismatches(description, encoder, count)
    if mismatches:
        shape = f"{encoder['num_layers']} x {encoder['embed_dim']}" if {"num_layers", "embed_dim"} <= set(encoder) \
            else f"`{encoder.get('name') or encoder.get('_component_')}`"
        lines += [f"**Note:** the recipe's description names {' and '.join(mismatches)}; this encoder is {shape}"
                  + (f", {_parameters(count)}" if count is not None else "") + ".", ""]
    return lines


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
    count = _parameter_count(export)
    lines = [
        "---", "library_name: " + ("transformers" if (export / HF_CONFIG).is_file() else "protjepa"),
        "tags: [protein, protein-language-model, protjepa]", "---", "",
        f"# {recipe['name']}", "",
        f"The encoder trained: {_encoder(recipe['encoder'], count)}. Trained with protjepa {__version__}: objectives "
        f"{objectives}, budget {budget}. The whole recipe, every default filled in, is below.", "",
        *_description(recipe.get("description") or "", recipe["encoder"], count),
        "## Data", "", *(data or ["- not recorded"]), "",
        "## Final training losses", "", *(losses or ["- not recorded"]), "",
        *_probe(run_dir),
        "## Loading", "", *_loading(export), "",
        "## Recipe", "", "```yaml", (run_dir / "recipe.yaml").read_text().rstrip(), "```", "",
    ]
    path = export / CARD
    write_text(path, "\n".join(lines))
    return path
