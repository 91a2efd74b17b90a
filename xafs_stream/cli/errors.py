"""CLI error type."""


class CliError(Exception):
    """A user-facing error: printed as one line with exit code 2, no traceback."""
