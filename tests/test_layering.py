"""The package's layering (``blocksparse.MODULES``), read from the source: no upward or private import."""
import ast
from pathlib import Path

import pytest

import blocksparse

PACKAGE = Path(blocksparse.__file__).parent


def imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import of a sibling module, wherever it sits (lazy ones included)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("blocksparse.")):
            mod = (node.module or "").removeprefix("blocksparse.") if node.level == 0 else node.module
            if mod:
                out.append((mod.split(".")[0], [a.name for a in node.names]))
            else:  # from . import a, b
                out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name.split(".")[1], []) for a in node.names if a.name.startswith("blocksparse.")]
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
])
def test_a_planted_upward_or_private_import_is_caught(planted, expect):
    sources = package_sources()
    sources["codec"] += "\n\ndef planted():\n    " + planted + "\n"
    assert any(expect in v for v in violations(sources, blocksparse.MODULES))
    sources = package_sources()
    sources["cli"] += "\nfrom .exploratory import _join_cards\n"
    assert "cli imports the private exploratory._join_cards" in violations(sources, blocksparse.MODULES)
