"""Errors that end a job with one clear line (what, where, the problem)."""


class InsarlakeError(Exception):
    """Base class: the message is the one line shown to the user."""


class ConfigError(InsarlakeError):
    """A bad configuration file, key or value."""


class InputError(InsarlakeError):
    """A bad input file: names the file, the field and the problem."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type when it has none), at most 300 characters:
    what a one-line error quotes of a library's exception (pyarrow's, Hadoop's trailers cut)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
