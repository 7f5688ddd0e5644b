"""The optional parts of protjepa and the pip extras that install them.

Training needs Composer, the modern encoder torchtune, the xformers attention backend
xformers, the benchmark's peer transformers. A pip user installs them as extras; a
missing one is a one-line error naming the extra (the CLI prints it for any import of
these modules that fails).
"""
from __future__ import annotations

import importlib

from protjepa.errors import UserError

# top-level module -> (what needs it, how to install it)
EXTRAS = {
    "composer": ("training", "pip install 'protjepa[train]' && pip install --no-deps 'mosaicml==0.32.*' "
                             "(Composer pins an older torch; it runs on this one)"),
    "torchtune": ("the modern encoder", "pip install 'protjepa[modern]'"),
    "xformers": ("attention: xformers", "pip install 'protjepa[xformers]'"),
    "transformers": ("protjepa bench's ESM peer", "pip install 'protjepa[bench]'"),
}


class MissingExtra(UserError, ModuleNotFoundError):
    """An optional dependency that is not installed; the message says which extra installs it."""


def missing_extra(exc: ModuleNotFoundError, module: str | None = None) -> MissingExtra | None:
    """The one-line error for ``exc``, raised importing ``module`` (default: the module it names)
    when that is one of the extras', else None."""
    module = module or (exc.name or "").split(".")[0]
    if module not in EXTRAS:
        return None
    needed_by, install = EXTRAS[module]
    what = "is not installed" if (exc.name or "").split(".")[0] == module else f"cannot import {exc.name}"
    return MissingExtra(f"{needed_by} needs {module}, which {what}: {install}", name=module)


def require(module: str) -> None:
    """Import ``module`` (one of EXTRAS) or raise :class:`MissingExtra`."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, module) from None
