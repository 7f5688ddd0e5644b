"""protjepa: composable training objectives (MLM, JEPA, VICReg, SIGReg) for protein language models.

The calls a notebook needs are attributes of this package (:mod:`protjepa.api`), imported on
first use so that ``import protjepa`` and the command line start fast.
"""
from importlib import metadata

try:
    __version__ = metadata.version("protjepa")
except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "unknown"
