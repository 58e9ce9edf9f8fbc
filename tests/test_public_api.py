"""The public faces: each subpackage exports what a user calls, the README lists exactly those
names, and each has a docstring with its arguments, a reference and an example."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SUBPACKAGES = ("logitkit.losses", "logitkit.optim", "logitkit.thresholds", "logitkit.matching",
               "logitkit.audit")


def readme_names(module: str) -> set[str]:
    """The names in the README's table row of ``module`` (before any ';' or '(' aside)."""
    text = README.read_text()
    section = text[text.index("Public names, by subpackage"):]
    row = next(line for line in section.splitlines() if line.startswith(f"| `{module}` |"))
    listed = row.split("|")[2].split(";")[0].split("(")[0]
    return set(re.findall(r"`(\w+)`", listed))


@pytest.mark.parametrize("module", SUBPACKAGES)
def test_the_readme_lists_exactly_the_exports(module):
    assert readme_names(module) == set(importlib.import_module(module).__all__)


@pytest.mark.parametrize("module", SUBPACKAGES)
def test_every_export_exists_and_is_documented(module):
    package = importlib.import_module(module)
    for name in package.__all__:
        doc = inspect.getdoc(getattr(package, name)) or ""
        assert ">>>" in doc, f"{module}.{name}: no example"
        assert "Reference" in doc, f"{module}.{name}: no reference"
        if inspect.isfunction(getattr(package, name)):
            assert "Args:" in doc or "same arguments" in doc, f"{module}.{name}: no Args"


def test_small_faces():
    assert len(importlib.import_module("logitkit.matching").__all__) <= 12
    optim = importlib.import_module("logitkit.optim").__all__
    assert not {"lazy_rows_update_", "sign_momentum_update_", "swap_halves"} & set(optim)
