"""One exception type for bad input, so the CLI can print it as a single line and exit non-zero."""


class SealError(Exception):
    """A user-facing error: the message says what is wrong, and where (file, field)."""
