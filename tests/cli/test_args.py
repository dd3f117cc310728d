"""Shared argument types: every ``--seed`` refuses what numpy's seed sequences cannot take."""

from __future__ import annotations

import argparse

import pytest

from nmc_dataset.cli._args import seed_int
from nmc_dataset.cli._main import build_parser, main


def _seed_actions():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if "--seed" in action.option_strings:
                yield name, action


def test_every_seed_option_uses_the_seed_type():
    found = dict(_seed_actions())
    assert len(found) >= 10, sorted(found)
    assert {n for n, a in found.items() if a.type is not seed_int} == set()


@pytest.mark.parametrize("text", ["-1", "1.5", "abc"])
def test_bad_seeds_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        seed_int(text)


def test_seed_int_keeps_large_seeds():
    assert seed_int("0") == 0 and seed_int(str(2**70)) == 2**70


def test_negative_seed_is_one_line_exit_2(tmp_path, capsys):
    code = main(
        [
            "sample-shells",
            "--model",
            str(tmp_path / "m.json"),
            "-n",
            "2",
            "--seed",
            "-1",
            "--out",
            str(tmp_path / "s.parquet"),
        ]
    )
    assert code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: argument --seed: must be >= 0, got -1"), err
    assert not (tmp_path / "s.parquet").exists()
