"""The ``nmc-dataset`` console script: argument parsing and printing, one module per command group.

Handlers call :mod:`nmc_dataset.pipeline` and the library; every failure is one line,
``error: ...``, and exit code 2.
"""

from nmc_dataset.cli._main import main

__all__ = ["main"]
