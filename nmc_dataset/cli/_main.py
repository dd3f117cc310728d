"""The ``nmc-dataset`` console script: one subcommand per pipeline stage, plus ``run RECIPE``.

Each area registers its subcommands in its own ``commands.py`` module (``register(sub)``),
so this file stays small. Handlers import heavy libraries (torch, vtk) lazily to keep
``nmc-dataset --help`` fast.

Every failure is one line on stderr, ``error: ...``, and exit code 2: bad options, bad input
files (:class:`nmc_dataset.errors.NmcError`), and unexpected errors, whose traceback is shown only
with ``--debug`` (or ``NMC_DATASET_DEBUG=1``). An interrupt (Ctrl-C) exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from nmc_dataset import __version__
from nmc_dataset._util import setup_logging
from nmc_dataset.errors import NmcError

#: modules that define ``register(subparsers)``; order is the order in ``--help``.
COMMAND_MODULES = (
    "nmc_dataset.cli.phantoms",
    "nmc_dataset.cli.shells",
    "nmc_dataset.cli.ebsd",
    "nmc_dataset.cli.sections",
    "nmc_dataset.cli.grains",
    "nmc_dataset.cli.orientations",
    "nmc_dataset.cli.particles",
    "nmc_dataset.cli.release",
    "nmc_dataset.cli.tomography",
    "nmc_dataset.cli.segmentation",
    "nmc_dataset.cli.sequences",
    "nmc_dataset.cli.run",
)


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and a one-line message (its default) without the usage dump."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = _Parser(
        prog="nmc-dataset",
        description="Fit, generate and publish virtual NMC811 cathode "
        "particles with radial grain architectures (one subcommand per stage).",
    )
    parser.add_argument("--version", action="version", version=f"nmc-dataset {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error (also NMC_DATASET_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # an area not built yet
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        0 on success, 2 on a usage or user error (one ``error: ...`` line on stderr), 130 on Ctrl-C.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error already printed
        return e.code if isinstance(e.code, int) else 2
    setup_logging(-1 if args.quiet else args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("NMC_DATASET_DEBUG", "") not in ("", "0")
    try:
        result = args.func(args)
    except NmcError as e:
        if debug:
            raise
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted (finished work is kept; re-run the same command to resume where it resumes)", file=sys.stderr
        )
        return 130
    except Exception as e:  # noqa: BLE001 - an unexpected error still gets one line
        if debug:
            raise
        print(
            f"error: unexpected {type(e).__name__}: {_one_line(str(e)) or 'no message'} (a bug or an "
            f"unhandled input; --debug shows the traceback)",
            file=sys.stderr,
        )
        return 2
    return int(result or 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
