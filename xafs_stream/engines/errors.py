"""Errors shared by the engines."""


class InputError(ValueError):
    """Bad input to an engine. The message names the argument and what was wrong with it.

    Subclasses ``ValueError`` so generic callers can catch it; the CLI prints it as one line and the
    worker records it as a result with status "error".
    """
