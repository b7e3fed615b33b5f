"""The layering the code promises: recipes talk to domains only through `seal_lm.domain`, and no module
imports another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import seal_lm

PACKAGE = Path(seal_lm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """seal_lm modules imported by `path` (with `top_level_only`, not those imported inside functions or
    under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seal_lm"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).exists()
                         or (PACKAGE.parent / (f"{node.module}.{alias.name}".replace(".", "/") + ".py")).exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("seal_lm"))
    return found


def test_recipes_import_no_domain():
    for path in (PACKAGE / "recipes").glob("*.py"):
        domains = [m for m in _imports(path, top_level_only=False) if m.startswith("seal_lm.domains")]
        assert not domains, f"{path.name} imports {domains}"


def test_there_are_no_import_circles():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _imports(path, top_level_only=True) if m in modules and m != name}
             for name, path in modules.items()}

    def visit(name: str, trail: list[str]) -> None:
        for nxt in graph[name]:
            assert nxt not in trail, " -> ".join([*trail[trail.index(nxt):], nxt])
            visit(nxt, [*trail, nxt])

    for name in graph:
        visit(name, [name])
