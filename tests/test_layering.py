"""The package's layering (``blocksparse.MODULES``), read from the source: no upward or private import."""
import ast
from pathlib import Path

import pytest

import blocksparse

PACKAGE = Path(blocksparse.__file__).parent


FRONT = "blocksparse_utils"  # the front door re-exports the whole package: above every module


def _dynamic(node: ast.Call) -> str | None:
    """The module an ``importlib.import_module(...)`` or ``__import__(...)`` call names (absolute,
    ``"."``-relative ones resolved against the package); ``"?"`` when it is not a literal."""
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return "?"
    return "blocksparse" + arg.value if arg.value.startswith(".") else arg.value


def _sibling(module: str) -> str | None:
    """The package module (or the front door) an absolute module name points to."""
    if module == FRONT or module.startswith(FRONT + "."):
        return FRONT
    return module.split(".")[1] if module.startswith("blocksparse.") else None


def imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import of a sibling module or of the front door, wherever it sits
    (lazy ones included): ``from . import m``, ``from blocksparse import m``, ``import
    blocksparse.m``, ``import blocksparse_utils`` and ``importlib.import_module("blocksparse.m")``
    (a name that is not a literal is reported as the module ``"?"``, which no order lists)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and node.module == "blocksparse"):
                mod = node.module if node.level == 1 else None
                if mod:
                    out.append((mod.split(".")[0], [a.name for a in node.names]))
                else:  # from . import a, b / from blocksparse import a, b
                    out += [(a.name, []) for a in node.names]
            elif node.level == 0 and _sibling(node.module or ""):
                out.append((_sibling(node.module), [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(_sibling(a.name), []) for a in node.names if _sibling(a.name)]
        elif isinstance(node, ast.Call) and (mod := _dynamic(node)):
            if mod == "?":
                out.append(("?", []))
            elif _sibling(mod):
                out.append((_sibling(mod), []))
    return out


def violations(sources: dict[str, str], order: tuple[str, ...]) -> list[str]:
    rank = {m: i for i, m in enumerate(order)}
    bad = [f"{m} is not in MODULES" for m in sources if m not in rank]
    for m, src in sources.items():
        for dep, names in imports(src):
            if dep == m:
                continue
            if dep not in rank or rank[dep] >= rank.get(m, -1):
                bad.append(f"{m} imports {dep}, listed after it (or not at all)")
            bad += [f"{m} imports the private {dep}.{n}" for n in names if n.startswith("_")]
    return bad


def package_sources() -> dict[str, str]:
    return {p.stem: p.read_text() for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_every_import_points_down_the_stated_order():
    assert violations(package_sources(), blocksparse.MODULES) == []
    assert set(blocksparse.MODULES) == set(package_sources())


@pytest.mark.parametrize("planted, expect", [
    ("from .cli import main", "codec imports cli"),           # upward
    ("from .codebook import _ANS", "codec imports codebook"),  # upward and private
    ("from blocksparse import cli", "codec imports cli"),     # upward, absolute, the module as a name
    ("from blocksparse.cli import main", "codec imports cli"),
    ("import blocksparse.cli", "codec imports cli"),
    ("import blocksparse_utils", "codec imports blocksparse_utils"),  # the front door, from inside
    ("from blocksparse_utils import encode", "codec imports blocksparse_utils"),
    ("import importlib; importlib.import_module('blocksparse.cli')", "codec imports cli"),
    ("from importlib import import_module; import_module('.cli', 'blocksparse')", "codec imports cli"),
    ("importlib.import_module('blocksparse_utils')", "codec imports blocksparse_utils"),
    ("__import__('blocksparse.cli')", "codec imports cli"),
    ("importlib.import_module('blocksparse.' + name)", "codec imports ?"),  # not a literal: not checkable
])
def test_a_planted_upward_or_private_import_is_caught(planted, expect):
    sources = package_sources()
    assert not any(v.startswith("codec imports") for v in violations(sources, blocksparse.MODULES))
    sources["codec"] += "\n\ndef planted():\n    " + planted + "\n"
    assert any(expect in v for v in violations(sources, blocksparse.MODULES))


def test_a_private_name_is_caught_across_modules():
    sources = package_sources()
    sources["cli"] += "\nfrom .answer import _runs\n"
    assert "cli imports the private answer._runs" in violations(sources, blocksparse.MODULES)


@pytest.mark.parametrize("allowed", ["from . import codec", "from blocksparse import runtime",
                                     "import importlib; importlib.import_module('blocksparse.runtime')",
                                     "import blocksparse.entropy", "import json, collections.abc"])
def test_a_downward_or_foreign_import_is_allowed(allowed):
    sources = package_sources()
    sources["bitstream"] += "\n\ndef planted():\n    " + allowed + "\n"
    assert not any(v.startswith("bitstream imports") for v in violations(sources, blocksparse.MODULES))
