"""The layout of ``logitkit.losses``: an acyclic import graph, public names only in the public
modules, and documented public API. Static checks (``ast``), so no ``transformers`` needed except
for the ``hf`` docstrings."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import logitkit.losses

PACKAGE = "logitkit.losses"
ROOT = Path(logitkit.losses.__file__).parent
SUBMODULES = {path.stem for path in ROOT.glob("*.py") if path.stem != "__init__"}


def _module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def _imports(path: Path) -> set[str]:
    """Every module of ``logitkit.losses`` that ``path`` imports anywhere in the file: at the top,
    inside functions, under ``if TYPE_CHECKING``, relatively, or by ``importlib.import_module``
    / ``__import__`` with a literal name."""
    found: set[str] = set()

    def add(module: str) -> None:
        if module == PACKAGE or module.startswith(PACKAGE + "."):
            found.add(module)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to logitkit.losses (the package's own files)
                base = PACKAGE.rsplit(".", node.level - 1)[0] if node.level > 1 else PACKAGE
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            add(module)
            if module == PACKAGE:  # from logitkit.losses import causal_lm
                for alias in node.names:
                    if alias.name in SUBMODULES:
                        add(f"{PACKAGE}.{alias.name}")
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                add(node.args[0].value)
    found.discard(_module_name(path))
    return found


def test_modules_and_causal_lm_do_not_import_each_other():
    modules = _imports(ROOT / "modules.py")
    causal_lm = _imports(ROOT / "causal_lm.py")
    assert f"{PACKAGE}.causal_lm" not in modules
    assert f"{PACKAGE}.modules" not in causal_lm
    assert PACKAGE not in modules and PACKAGE not in causal_lm  # not through the package either
    assert f"{PACKAGE}._base" in modules and f"{PACKAGE}._base" in causal_lm  # the shared base


def test_the_import_check_sees_function_level_and_type_checking_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from logitkit.losses.modules import OutputLoss\n"
                      "def f():\n    from .causal_lm import shifted\n"
                      "    from logitkit.losses import fused\n"
                      "    importlib.import_module('logitkit.losses.hf')\n")
    assert _imports(source) == {f"{PACKAGE}.modules", f"{PACKAGE}.causal_lm", PACKAGE,
                                f"{PACKAGE}.fused", f"{PACKAGE}.hf"}


def test_the_import_graph_of_the_losses_package_is_acyclic():
    graph = {_module_name(path): _imports(path) for path in ROOT.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join((*stack, module))}"
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, (*stack, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_functional_defines_only_the_public_functions():
    """The row machinery lives in the private ``_rows`` module; ``functional`` defines the public
    losses (and private helpers), nothing else public."""
    tree = ast.parse((ROOT / "functional.py").read_text())
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name)}
    public = {name for name in defined if not name.startswith("_")}
    assert public == {"emo_loss", "emo_mle_loss", "tailr_loss", "tailr_gamma_schedule"}
    assert public <= set(logitkit.losses.__all__)


def _public_objects():
    objects = [(name, getattr(logitkit.losses, name)) for name in logitkit.losses.__all__]
    return [pytest.param(obj, id=name) for name, obj in objects]


def _check_documented(obj) -> None:
    doc = inspect.getdoc(obj)
    assert doc, obj
    for section in ("Args:", "Returns:", "Reference:", ">>> "):
        assert section in doc, f"{obj.__qualname__}: no {section!r}"
    if inspect.isclass(obj):
        signature = inspect.signature(obj.__init__)
        parameters = [p for name, p in signature.parameters.items() if name != "self"]
    else:
        parameters = list(inspect.signature(obj).parameters.values())
    args = doc.split("Args:", 1)[1].split("\n\n", 1)[0]
    for parameter in parameters:
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*",
                  inspect.Parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        assert f"\n    {prefix}{parameter.name}: " in args, \
            f"{obj.__qualname__}: argument {parameter.name} is not documented"


@pytest.mark.parametrize("obj", _public_objects())
def test_public_names_are_documented(obj):
    _check_documented(obj)


def test_hf_public_names_are_documented():
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import logitkit.losses.hf as hf

    for name in hf.__all__:
        _check_documented(getattr(hf, name))
