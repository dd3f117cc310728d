"""The package's shape: layers, no cycles between subpackages, a declared and documented public API."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports
from numpydoc.validate import validate

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = [
    "io",
    "shells",
    "ebsd",
    "tessellation",
    "calibration",
    "particles",
    "export",
    "tomography",
    "synthetic",
    "pipeline",
    "cli",
    "testing",
]
#: numpydoc checks every public function and class passes: a docstring (GL08), every parameter
#: documented (PR01), no unknown parameter documented (PR02)
DOC_RULES = {"GL08", "PR01", "PR02"}


def test_import_linter_contracts_hold(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_import_cycle_between_subpackages():
    graph = grimp.build_graph("nmc_dataset", include_external_packages=False)

    def pkg(module):
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""

    edges = {
        (pkg(a), pkg(b)) for a in graph.modules for b in graph.find_modules_directly_imported_by(a) if pkg(a) != pkg(b)
    }
    cycles = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not cycles, f"subpackages importing each other: {cycles}"


def test_layout_is_the_layers():
    """Every module of the package belongs to a declared subpackage or the small shared core."""
    core = {"__init__.py", "_util.py", "errors.py", "outputs.py", "compare.py"}
    top = {p.name for p in (ROOT / "nmc_dataset").iterdir() if p.suffix == ".py"}
    assert top <= core, f"modules outside a subpackage: {sorted(top - core)}"
    for name in SUBPACKAGES:
        assert (ROOT / "nmc_dataset" / name / "__init__.py").exists()


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_public_names_resolve_and_are_documented(package):
    mod = importlib.import_module(f"nmc_dataset.{package}")
    assert mod.__all__, f"nmc_dataset.{package} declares no public API"
    problems = []
    for name in mod.__all__:
        obj = getattr(mod, name)  # every declared name imports
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not obj.__module__.rsplit(".", 1)[-1].startswith("_"):
            problems.append(f"{name}: defined in a public module {obj.__module__} (implementations live in _modules)")
        errors = validate(f"{obj.__module__}.{obj.__qualname__}")["errors"]
        problems += [f"{name}: {code} {msg}" for code, msg in errors if code in DOC_RULES]
    assert not problems, "\n".join(problems)
