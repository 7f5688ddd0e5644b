"""The shipped recipes and experiment files, installed as the package data ``protjepa.recipes``
(read through :mod:`protjepa.shipped`); this folder holds YAML only."""
