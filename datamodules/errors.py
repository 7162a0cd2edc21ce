"""The one error every data module raises for bad data files (the CLI turns it into one `litlab: ...` line)."""


class DataError(RuntimeError):
    """A data file is missing or unreadable; the message says which and what to do."""
