"""protjepa: composable training objectives (MLM, JEPA, VICReg, SIGReg) for protein language models.

The calls a notebook needs are attributes of this package (:mod:`protjepa.api`), imported on
first use so that ``import protjepa`` and the command line start fast.
"""
from importlib import metadata

try:
    __version__ = metadata.version("protjepa")
except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "unknown"

API = ("load_recipe", "recipes", "build_model", "train", "load_encoder", "embed", "probe", "compare", "compare_seeds")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:  # the first use imports torch and the library: not paid by the command line's start-up
        from protjepa import api

        return getattr(api, name)
    raise AttributeError(f"module 'protjepa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
