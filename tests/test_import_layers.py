"""The package's imports go one way: each module imports only from lower layers (or its own
unit), and no modules import each other in a cycle. docs/architecture.md draws these layers."""
from __future__ import annotations

import ast
from pathlib import Path

import protjepa

ROOT = Path(protjepa.__file__).resolve().parents[1]
FOLDERS = {"protjepa": ROOT / "protjepa", "protjepa.objectives": ROOT / "objectives",
           "protjepa.encoders": ROOT / "encoders"}

# Bottom to top. A unit is a top-level module or a subpackage of protjepa; it may import
# units of lower layers only (and itself). Units of one layer do not import each other.
# Encoders and objectives are plugins: the recipe composes them from above, they never read it.
LAYERS = [
    ["files"],
    ["errors", "alphabet", "yamlio"],
    ["durations", "paths", "batch", "registry", "extras", "shipped", "checkpoint_file", "precision", "devices",
     "parts"],
    ["flops", "attention"],
    ["encoders"],
    ["objectives"],
    ["recipe"],
    ["data"],
    ["model"],
    ["build"],
    ["export", "provenance"],
    ["card"],
    ["training", "evaluation"],
    ["bench"],
    ["experiment", "api"],
    ["commands"],
    ["cli"],
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            if package == "protjepa" and parts[0] in ("objectives", "encoders"):
                continue  # not where these packages are installed from
            found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """protjepa modules ``name`` imports, at module level or inside functions."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from pkg import module` or `from module import name`
                target = target.rpartition(".")[0]
            if target and target != name and (target != "protjepa" or name == "protjepa"):
                out.add(target)
    return out


def unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "protjepa"


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def test_every_unit_has_a_layer():
    assert {unit(m) for m in GRAPH} - {"protjepa", "__main__"} <= set(LAYER_OF)


def test_every_module_of_encoders_and_objectives_is_walked():
    """Each file there is in the graph under the name it is imported by, so its imports are held to
    the layers (encoders/weights.py once read the recipe schema and no test saw it)."""
    for package in ("encoders", "objectives"):
        files = {".".join(("protjepa", package, *p.relative_to(ROOT / package).with_suffix("").parts))
                 .removesuffix(".__init__") for p in (ROOT / package).rglob("*.py")}
        assert files and files <= set(GRAPH), files - set(GRAPH)
        assert all(unit(m) == package for m in files)


def test_imports_go_down():
    upward = []
    for module, targets in GRAPH.items():
        if unit(module) not in LAYER_OF:
            continue
        for target in targets:
            mine, theirs = unit(module), unit(target)
            if mine != theirs and LAYER_OF[theirs] >= LAYER_OF[mine]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(sorted(upward))


def test_no_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]) if target in path
                              else f"{module} -> {target}")
            elif target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_composer_only_under_training():
    importers = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "composer" or n.startswith("composer.") for n in names) and unit(name) != "training":
                importers.append(name)
    assert not importers, f"Composer imported outside protjepa/training/: {sorted(set(importers))}"
