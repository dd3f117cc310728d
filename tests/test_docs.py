"""The README and docs/ stay true to the code: options, imports, links and anchors.

* every ``nmc-dataset COMMAND --option`` in the README's shell blocks is an option of that
  subcommand's parser;
* every ``from nmc_dataset... import ...`` in the README and docs/ resolves;
* every relative link points at an existing file and, with ``#anchor``, at an existing anchor
  (an explicit ``<a id=...>`` or a heading's GitHub slug);
* the README's Python example runs (``-m slow``: it segments and fits a 128³ phantom).
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: pages written beside these in the same release (linked before they all exist in one checkout)
COMPANION_PAGES = {"shells.md", "orientations.md", "meshes.md", "tomography.md", "segmentation.md"}


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from nmc_dataset.cli._main import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    for block in _blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0]
            if "nmc-dataset " not in line:
                continue
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("nmc-dataset "):
                    yield part


def test_readme_command_options_exist():
    parsers = _subparsers()
    seen = 0
    for cmd in _readme_commands():
        words = shlex.split(cmd.replace("[", " ").replace("]", " "))
        name = words[1]
        assert name in parsers, f"README uses unknown command {name!r}: {cmd}"
        known = {s for a in parsers[name]._actions for s in a.option_strings}
        for w in words[2:]:
            if w.startswith("--"):
                opt = w.split("=", 1)[0]
                assert opt in known, f"README: `nmc-dataset {name}` has no option {opt} ({cmd})"
        seen += 1
    assert seen >= 15  # the tour is there


def test_doc_imports_resolve():
    for path in DOCS:
        text = path.read_text()
        for block in _blocks(text, "python"):
            for mod, names in re.findall(r"^from (nmc_dataset[\w.]*) import ([^\n]+)$", block, flags=re.M):
                # the documented Python API uses public names only: no private module, no private name
                assert not any(part.startswith("_") for part in mod.split(".")), f"{path.name}: private {mod}"
                module = importlib.import_module(mod)
                for name in (n.strip() for n in names.split("#", 1)[0].strip("() ").split(",")):
                    if name:
                        assert hasattr(module, name), f"{path.name}: {mod} has no {name}"
                        assert not name.startswith("_"), f"{path.name}: private name {name}"


def _slug(heading: str) -> str:
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text()
    found = set(re.findall(r'<a id="([^"]+)"', text))
    found |= {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    return found


def test_links_and_anchors_resolve():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                assert dest.name in COMPANION_PAGES, f"{path.name}: broken link {target}"
                continue
            if anchor:
                assert anchor in _anchors(dest), f"{path.name}: no anchor #{anchor} in {dest.name}"


@pytest.mark.slow
def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    example = next(b for b in _blocks(text, "python") if "make_ct_phantom" in b)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["coeffs"].shape == (1000, 100)
    assert scope["volume"].labels.max() == scope["particle"].n_grains
