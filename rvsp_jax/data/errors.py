"""The one error type of the data layer."""

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file or source is missing, truncated, corrupt or unreachable.

    The message names the file (or source) and what is wrong with it, and where it can, the remedy.
    Subclasses ``ValueError`` so callers that validate inputs generically still catch it.
    """
