"""The built-in encoders: every module of this folder is imported, so each registers itself."""
from protjepa.registry import import_package_modules

import_package_modules(__name__, __path__)
