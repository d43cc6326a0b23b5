"""Errors that end a job with one clear line (what, where, the problem)."""


class InsarlakeError(Exception):
    """Base class: the message is the one line shown to the user."""


class ConfigError(InsarlakeError):
    """A bad configuration file, key or value."""


class InputError(InsarlakeError):
    """A bad input file: names the file, the field and the problem."""
