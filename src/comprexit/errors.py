"""Errors a user can act on.

Everything that comes from bad input (files, configs, checkpoints, text) is raised as a
`ComprexitError` subclass with a one-line message; the CLI prints that line and exits
non-zero instead of showing a traceback from deep inside torch.
"""


class ComprexitError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(ComprexitError, ValueError):
    """A configuration field is unknown, of the wrong type or out of range."""


class InputError(ComprexitError, ValueError):
    """A text, question or file given to the library cannot be used."""


class CheckpointError(ComprexitError):
    """A weights folder is missing, corrupt, or belongs to a different backbone."""


class DataError(ComprexitError, ValueError):
    """A data file is malformed; the message names the file and the line."""
