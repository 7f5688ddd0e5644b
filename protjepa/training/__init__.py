"""Training on MosaicML Composer. Composer is imported only inside this package."""
from protjepa.extras import require

require("composer")  # before any module here imports it: a missing extra is one line, not a traceback
