"""YAML files whose errors name the place: ``file:line: key.path: message``.

Recipes, task specs, experiment files and saved encoder specs all read through here; JSON files
(probe results, Hugging Face configs, provenance records) through :func:`read_json`.
"""
from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from protjepa.files import check_regular

# A recipe holds about a hundred values, an experiment file a few hundred: aliases that expand a
# document past this are an alias bomb ("billion laughs"), refused before anything walks it.
MAX_VALUES = 100_000


class Strict(BaseModel):
    """Base of the models read from YAML (recipes, task specs, experiment files): unknown keys are
    errors, and so are NaN and infinity (``1e400`` reaches pydantic as text, which it reads as inf)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def misplaced_boolean(raw: Any, model: type[BaseModel], loc: tuple = ()) -> tuple[tuple, str] | None:
    """(key path, message) of the first value of ``raw`` where ``model`` and YAML disagree on booleans:
    ``true`` where a number is wanted, or anything but ``true``/``false`` where a boolean is (pydantic
    alone reads ``weight: true`` as 1 and ``packing: 1`` as true); None when there is none. Nested
    models, lists and tuples are walked; a field that also takes strings converts as it sees fit."""
    if not isinstance(raw, dict):
        return None
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    for key, value in raw.items():
        found = _misplaced(value, fields[key].annotation, loc + (key,)) if key in fields else None
        if found is not None:
            return found
    return None


def _misplaced(value: Any, annotation: Any, loc: tuple) -> tuple[tuple, str] | None:
    wanted = _types(annotation)
    if wanted == {bool} and value is not None and not isinstance(value, bool):
        return loc, f"expected true or false, got {value!r}"
    if isinstance(value, bool) and wanted & {int, float} and not wanted & {bool, str, Any}:
        return loc, f"expected a number, got {str(value).lower()}"
    models = [t for t in wanted if isinstance(t, type) and issubclass(t, BaseModel)]
    if len(models) == 1:
        return misplaced_boolean(value, models[0], loc)
    if isinstance(value, (list, tuple)) and get_origin(annotation) in (list, tuple):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        for i, (item, item_annotation) in enumerate(zip(value, items * len(value) if len(items) == 1 else items)):
            found = _misplaced(item, item_annotation, loc + (i,))
            if found is not None:
                return found
    return None


def _types(annotation: Any) -> set:
    """The types ``annotation`` takes as they are, None aside: ``float | None`` -> {float}, ``list[int]`` -> {list}."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _types(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_types(a) for a in get_args(annotation)))
    return {origin or annotation} - {type(None)}


class RefusedYaml(yaml.MarkedYAMLError):
    """Well-formed YAML that no file of ours holds: a key given twice, an alias bomb, a recursive alias."""


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing (:class:`RefusedYaml`, with the line) duplicate keys (YAML forbids
    them; PyYAML keeps the last silently) and aliases that recurse or expand past :data:`MAX_VALUES`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except RecursionError:  # PyYAML composes nested collections recursively
        raise RefusedYaml(problem="nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values under ``node`` with every alias expanded, each distinct node counted once (``sizes``);
    checks each mapping's keys on the way."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise RefusedYaml(problem="an alias refers to a node that holds it (a recursive alias)",
                          problem_mark=node.start_mark)
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        _check_unique_keys(node)
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    if size > MAX_VALUES:
        raise RefusedYaml(problem=f"its aliases expand to more than {MAX_VALUES:,} values (an alias bomb?)",
                          problem_mark=node.start_mark)
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _check_unique_keys(node: yaml.MappingNode) -> None:
    first_line: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if (key.tag, key.value) in first_line:
            raise RefusedYaml(problem=f"key {key.value!r} is given twice (first on line "
                                      f"{first_line[key.tag, key.value]}); YAML keeps only one",
                              problem_mark=key.start_mark)
        first_line[key.tag, key.value] = key.start_mark.line + 1


def read_text(path: Path, error: type[Exception], what: str, kind: str = "YAML") -> str:
    """A text file's contents; a missing, unreadable or binary file, or one that is not a regular file
    (a named pipe, a device), raises ``error`` in one line."""
    check_regular(path, error, f"{what} file")
    try:
        return path.read_text()
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8); a {what} file is {kind} text") from None


def read_json(path: Path, error: type[Exception], what: str) -> Any:
    """A JSON file's data; a missing, binary or malformed file raises ``error`` in one line."""
    text = read_text(path, error, what, "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply for a {what} file") from None


def read_yaml(path: Path, error: type[Exception], what: str) -> tuple[Any, str]:
    """(parsed data, text) of a YAML file; a missing, binary or malformed file raises ``error`` in one line."""
    text = read_text(path, error, what)
    try:
        return load_yaml(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: {'' if isinstance(exc, RefusedYaml) else 'malformed YAML: '}{problem}") from None


def peek_mapping(path: Path) -> dict:
    """The top-level mapping of a YAML file, or ``{}`` when it cannot be read or is no mapping: for a
    look before the file's own loader reads it (and reports what is wrong, in one line)."""
    try:
        raw, _ = read_yaml(path, ValueError, "YAML")
    except ValueError:
        return {}
    return raw if isinstance(raw, dict) else {}


def located(source: str, lines: "YamlLines | None", loc: tuple, message: str) -> str:
    """``file:line: key.path: message``; ``file: --set KEY: key.path: message`` when an override gave the value."""
    given = lines.given_by(loc) if lines else None
    if given:
        return f"{source}: {given}: {format_loc(loc)}: {message}"
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
    """Maps a key path to the line of the YAML node it came from, or to the override that replaced
    it: ``given`` maps the key path of each node an override created or replaced to its name (``--set data.crop``)."""

    def __init__(self, text: str, given: dict[tuple, str] | None = None):
        try:
            self.root = yaml.compose(text)
        except (yaml.YAMLError, RecursionError):
            self.root = None
        self.given = given or {}

    def given_by(self, loc: tuple) -> str | None:
        """The override that gave the value at ``loc`` (the last to touch it), or None: the file did."""
        return next((name for root, name in reversed(self.given.items()) if loc[:len(root)] == root), None)

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
