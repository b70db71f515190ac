"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class EdgepruneError(Exception):
    """Bad input or an impossible request: the message says what, where, and what was expected."""
