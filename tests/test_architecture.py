"""The import layering of docs/architecture.md ("What may import what"), checked on the source: a lower layer
importing a higher one fails here, naming the file and the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "latprof"

LAYERS: dict[str, int] = {
    "errors": 0, "shapes": 0, "rows": 0, "results": 0, "console": 0,
    "workloads": 1, "measure": 1,
    "cost": 2, "analysis": 2,
    "backends": 3, "run": 3,
    "profile": 4, "per_block": 4, "experiments": 4, "regress": 4, "report": 4, "catalog": 4, "predict": 4,
    "views": 5,
    "cli": 6,
}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "latprof" and len(parts) > 1 else None


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, latprof sub-package) of every import outside ``if TYPE_CHECKING:`` blocks, at any depth."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = ([node.module] if node.module != "latprof"  # ``from latprof import x``: x a module, or a name
                     else [f"latprof.{a.name}" for a in node.names if a.name in LAYERS])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, t) for t in map(_top, names) if t]
    return found


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _owner(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def test_every_module_has_a_layer() -> None:
    owners = {_owner(p) for p in _sources()} - {"__init__"}
    assert owners <= set(LAYERS), f"add {sorted(owners - set(LAYERS))} to docs/architecture.md and LAYERS"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    owner = _owner(path)
    if owner == "__init__":
        return
    bad = [f"line {line}: latprof.{target} (layer {LAYERS.get(target)})"
           for line, target in _runtime_imports(ast.parse(path.read_text()))
           if target != owner and LAYERS.get(target, 99) > LAYERS[owner]]
    assert not bad, f"{path.relative_to(PACKAGE)} (layer {LAYERS[owner]}) imports a higher layer: {bad}"


def test_the_checker_sees_a_violation() -> None:
    tree = ast.parse("def f():\n    from latprof.cli import main\nfrom latprof import views\n")
    assert sorted(t for _, t in _runtime_imports(tree)) == ["cli", "views"]
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from latprof.backends import x\n")
    assert _runtime_imports(guarded) == []
