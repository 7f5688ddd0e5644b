"""Fairseq-style registries for encoders and objectives, and plugin discovery.

A registry maps a name to a builder and (for objectives) its pydantic config class.
Plugins register themselves by importing: either a module a recipe names under
``plugins:`` (like fairseq's ``--user-dir``) or a module advertised by another
installed package under the ``protjepa.plugins`` entry-point group.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Any, Callable, Generic, TypeVar

from protjepa.errors import UserError

T = TypeVar("T")

ENTRY_POINT_GROUP = "protjepa.plugins"


class RegistryError(UserError, ValueError):
    """A registry lookup or registration that cannot succeed."""


def _where(obj: Any) -> str:
    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    except (OSError, TypeError):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: T
    config_cls: type | None
    where: str


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_cls: type | None = None) -> Callable[[T], T]:
        def decorator(builder: T) -> T:
            where = _where(builder)
            old = self._entries.get(name)
            if old is not None and old.where != where:
                raise RegistryError(
                    f"duplicate {self.kind} name {name!r}: defined at {old.where} and at {where}"
                )
            self._entries[name] = Entry(name, builder, config_cls, where)
            return builder

        return decorator

    def get(self, name: str) -> Entry[T]:
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        load_plugins()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries


OBJECTIVES: Registry[type] = Registry("objective")
ENCODERS: Registry[Callable[..., Any]] = Registry("encoder")


def register_objective(name: str, config: type | None = None):
    """Class decorator: ``@register_objective("mlm", config=MLMConfig)``."""
    return OBJECTIVES.register(name, config)


def register_encoder(name: str, config: type | None = None):
    """Factory decorator: ``@register_encoder("esm2", config=ESM2Config)``."""
    return ENCODERS.register(name, config)


_builtins_loaded = False
_loaded_modules: set[str] = set()


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import the built-in plugins and installed entry points (once), then the named modules.

    The flag is set before importing, so a plugin module that itself looks a name up
    while it is being imported does not start the loading again.
    """
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        try:
            importlib.import_module("protjepa.objectives")
            importlib.import_module("protjepa.encoders")
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                _import_plugin(ep.load, f"plugin entry point {ep.name!r} ({ep.value})")
        except BaseException:
            _builtins_loaded = False  # a half-filled registry would only give confusing "unknown name" errors
            raise
    for module in modules:
        if module not in _loaded_modules:
            _import_plugin(partial(importlib.import_module, module), f"plugin module {module!r}")
            _loaded_modules.add(module)


def _import_plugin(load: Callable[[], Any], what: str) -> None:
    try:
        load()
    except RegistryError:
        raise  # a duplicate name already says where both definitions are
    except ImportError as exc:
        raise RegistryError(f"{what}: cannot import: {exc}") from exc
    except SystemExit as exc:  # it would end protjepa with its own status and no word of why
        raise RegistryError(f"{what}: called sys.exit({exc.code!r}) while importing") from None
    except Exception as exc:  # a broken third-party plugin must say who it is
        raise RegistryError(f"{what}: failed while importing: {type(exc).__name__}: {exc}") from exc


def import_package_modules(package: str, path: list[str]) -> None:
    """Import every module of a package folder (fairseq's criterions/__init__.py): a new
    built-in objective or encoder is one file, registered by being there."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


def import_component(path: str) -> Any:
    """``pkg.module.attr`` -> the attribute (torchtune's ``_component_`` convention)."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise RegistryError(f"{path!r} is not a dotted path (module.factory)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"module {module_name!r} has no {attr!r}") from None
