"""User-facing errors: each one is a single readable line and makes the CLI exit with status 2."""

from __future__ import annotations


class AutoLFADSError(Exception):
    """Base class of errors caused by the user's input (data, config, command line)."""


class DataError(AutoLFADSError):
    """An input data file breaks the layout of docs/data-format.md.

    The message names the file, the key, what was found and what was expected.
    """


class ConfigError(AutoLFADSError):
    """A configuration value is unknown, of the wrong type, or disagrees with the data."""


class UsageError(AutoLFADSError):
    """The command line is malformed (unknown command, missing argument, existing output...)."""
