"""``python -m protjepa``: the ``protjepa`` command."""
import sys

from protjepa.cli import main

sys.exit(main())
