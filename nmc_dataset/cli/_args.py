"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse


def seed_int(text: str) -> int:
    """A random seed: an integer ``>= 0`` (numpy's seed sequences take no negative entropy)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
