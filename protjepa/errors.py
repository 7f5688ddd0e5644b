"""User-facing errors: the CLI prints their message as one line and exits 2."""


class UserError(Exception):
    """Bad input (a recipe, a file, a checkpoint, a budget); the message names the place."""
