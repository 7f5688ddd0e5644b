"""YAML files whose errors name the place: ``file:line: key.path: message``.

Recipes, task specs, experiment files and saved encoder specs all read through here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Base of the models read from YAML (recipes, task specs, experiment files): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def read_yaml(path: Path, error: type[Exception], what: str) -> tuple[Any, str]:
    """(parsed data, text) of a YAML file; a missing file or malformed YAML raises ``error`` in one line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8); a {what} file is YAML text") from None
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: malformed YAML: {problem}") from None


def located(source: str, lines: "YamlLines | None", loc: tuple, message: str) -> str:
    line = lines.line(loc) if lines else None
    return f"{source}:{line}: {format_loc(loc)}: {message}" if line else f"{source}: {format_loc(loc)}: {message}"


def located_first_error(exc: ValidationError, source: str, lines: "YamlLines | None", prefix: tuple = ()) -> str:
    """pydantic's first error as ``file:line: key.path: message``; ``prefix``: the key path of
    the section validated (pydantic's paths are relative to it)."""
    loc, message = first_error(exc)
    return located(source, lines, prefix + loc, message)


def format_loc(loc: tuple) -> str:
    """('objectives', 1, 'loss') -> objectives[1].loss"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def first_error(exc: ValidationError) -> tuple[tuple, str]:
    """The key path and short message of pydantic's first error, ``(+N more)`` when it found others."""
    errors = exc.errors()
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return tuple(errors[0]["loc"]), format_error(errors[0]) + more


def format_error(err: dict) -> str:
    """One pydantic error as a short message: ``expected cosine|mse|smooth_l1``, ``unknown key``."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "literal_error" and "expected" in ctx:
        return "expected " + "|".join(re.findall(r"'([^']*)'", ctx["expected"]))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key missing"
    msg = err.get("msg", "invalid")
    return msg.removeprefix("Value error, ")


class YamlLines:
    """Maps a key path to the line of the YAML node it came from."""

    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text)
        except yaml.YAMLError:
            self.root = None

    def line(self, loc: tuple) -> int | None:
        node, line = self.root, None
        for part in loc:
            if node is None:
                break
            line = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == part), None)
                if match is None:
                    return line  # a missing key: point at its parent
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                return line
        return node.start_mark.line + 1 if node is not None else line
