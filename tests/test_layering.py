"""The floors of the package (docs/DESIGN.md section 2): a module imports only from floors
below its own (or from its own package), and the two method packages never import each
other. Read from the source with ``ast``, so lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "mpqbench"

#: Floor of each top-level part of the package, bottom (0) to top.
FLOORS = {
    "__init__": 0, "_atomic": 0, "_names": 0, "errors": 0, "timing": 0, "distributed": 0,
    "precision": 0, "determinism": 0,
    "workloads": 1,
    "quant": 2,
    "method": 3,
    "search": 4, "baselines": 4,
    "bench": 5,
    "cli": 6, "__main__": 7,
}


def _part(module: str) -> str:
    """``mpqbench.quant.layers`` -> ``quant``; ``mpqbench`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m == "mpqbench" or m.startswith("mpqbench.")}


MODULES = _modules()


def test_every_part_has_a_floor():
    assert {_part(m) for m in MODULES} <= set(FLOORS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_lower_floors(module):
    own = _part(module)
    for imported in _imports(MODULES[module]):
        other = _part(imported)
        if other == own:
            continue
        assert FLOORS[other] < FLOORS[own], (
            f"{module} (floor {FLOORS[own]}, {own}/) imports {imported} "
            f"(floor {FLOORS[other]}, {other}/)")


def test_quant_imports_no_method_harness_or_cli():
    for module, path in MODULES.items():
        if _part(module) == "quant":
            bad = {m for m in _imports(path)
                   if _part(m) in {"bench", "search", "baselines", "cli", "method"}}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_methods_do_not_import_each_other():
    for module, path in MODULES.items():
        own = _part(module)
        if own in {"search", "baselines"}:
            other = {"search": "baselines", "baselines": "search"}[own]
            bad = {m for m in _imports(path) if _part(m) == other}
            assert not bad, f"{module} imports {sorted(bad)}: shared code belongs in method/"
