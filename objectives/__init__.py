"""The built-in objectives; importing this package registers them."""
from protjepa.objectives import jepa, mlm, sigreg, vicreg  # noqa: F401
