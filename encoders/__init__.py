"""Built-in encoders: importing a module registers it."""
from protjepa.encoders import esm2  # noqa: F401
from protjepa.encoders import modern  # noqa: F401
from protjepa.encoders import adapter  # noqa: F401
