"""Exceptions users see.

Every error raised for bad *input* (files, keys, options) derives from :class:`NmcError`.
The CLI prints ``str(err)`` on one line and exits with code 2; programming errors keep
their traceback.
"""

from __future__ import annotations

import os


class NmcError(Exception):
    """Base class of user-facing errors.

    Parameters
    ----------
    message : str
        What is wrong and, where useful, what to do.
    where : str or path-like, optional
        The file, ``file:line`` or recipe key the problem is in; prefixed to the message.
    """

    exit_code = 2

    def __init__(self, message: str, where: str | os.PathLike | None = None):
        self.message = message
        self.where = None if where is None else os.fspath(where)
        super().__init__(f"{self.where}: {message}" if self.where else message)


class InputError(NmcError):
    """An input file is unreadable, malformed or holds unusable data."""


class RecipeError(NmcError):
    """A recipe (or an option) has an invalid key or value."""


class FormatVersionError(NmcError):
    """A file was written by an incompatible (usually newer) format version."""


class MissingExtraError(NmcError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, module: str):
        super().__init__(
            f"{feature} needs the optional package '{module}': pip install {module} "
            f'(or, in a clone of nmc-dataset, pip install -e ".[{extra}]")'
        )


class ExportError(NmcError):
    """Some items (particles, shards) could not be exported; the others are written and listed."""


class ResourceError(NmcError):
    """The request would exceed memory or disk limits (checked before allocating)."""


class TrainingError(NmcError):
    """Training diverged (e.g. NaN losses); the last good checkpoint is kept."""


class PublishError(NmcError):
    """Publishing failed: credentials, checksums or the remote refused."""
