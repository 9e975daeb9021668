"""Each package of src/tokenkeep imports only packages below it (docs/ARCHITECTURE.md).

An AST check, counting every import (inside functions and under TYPE_CHECKING too: an
upward import is an upward import). The order is data, in LAYERS; the docs quote it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tokenkeep"

#: Low to high. The foundation's modules may import each other (they are small and
#: acyclic); every other package may import only from the layers before it.
FOUNDATION = frozenset(
    {
        "__about__",
        "vocabulary",
        "clock",
        "secret",
        "errors",
        "config",
        "urls",
        "crypto",
        "observability",
        "periodic",
    }
)
LAYERS: tuple[str, ...] = (
    "emulator",
    "store",
    "providers",
    "oauth",
    "lifecycle",
    "orgs",
    "diagnosis",
    "events",
    "runtime",
    "proxy",
    "api",
    "server",
    "client",
    "harness",
    "testing",
    "demo",
    "cli",
    "__main__",
    "__init__",
)


def _rank(unit: str) -> int:
    return -1 if unit in FOUNDATION else LAYERS.index(unit)


def _unit(module: str) -> str | None:
    """The layer unit of a dotted ``tokenkeep...`` module name."""
    parts = module.split(".")
    if parts[0] != "tokenkeep":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(root: Path) -> list[str]:
    """Every ``importer -> imported`` that goes up (or sideways out of the foundation)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts)
        unit = _unit(module)
        assert unit is not None
        if unit.endswith("__init__") and module != "tokenkeep.__init__":
            unit = module.split(".")[1]
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                target = _unit(name)
                if target is None or target == unit:
                    continue
                if target in FOUNDATION and unit in FOUNDATION:
                    continue
                if _rank(target) >= _rank(unit):
                    found.append(f"{module} -> {name}")
    return found


def test_no_package_imports_a_package_above_it() -> None:
    assert upward_imports(SRC) == []


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    pkg = tmp_path / "tokenkeep"
    (pkg / "store").mkdir(parents=True)
    (pkg / "store" / "bad.py").write_text(
        "def f():\n    from tokenkeep.proxy.app import ProxyApp\n"
    )
    (pkg / "proxy").mkdir()
    (pkg / "proxy" / "ok.py").write_text("from tokenkeep.store import Store\n")
    (pkg / "clock.py").write_text("from tokenkeep.lifecycle import x\n")
    assert upward_imports(pkg) == [
        "tokenkeep.clock -> tokenkeep.lifecycle",
        "tokenkeep.store.bad -> tokenkeep.proxy.app",
    ]
