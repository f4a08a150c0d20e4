"""The layering written down in docs/architecture.md holds: no import climbs up, goes sideways
or closes a cycle, and no benchmark reaches for a private name of the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mdp_trt"


def layers() -> dict[str, int]:
    text = (ROOT / "docs/architecture.md").read_text()
    block = re.search(r"<!-- layers:.*?-->(.*?)<!-- /layers -->", text, re.S).group(1)
    ranks = {}
    for line in block.strip().splitlines():
        rank, units = line.split(".", 1)
        for unit in re.findall(r"`([\w.]+)`", units):
            ranks[unit] = int(rank)
    return ranks


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every mdp_trt module ``path`` imports, at module level or inside a function."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mdp_trt")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            if base.startswith("mdp_trt"):
                # "from mdp_trt.x import y" may name a submodule y
                found |= {f"{base}.{a.name}" if (PACKAGE.parent / f"{base}.{a.name}".replace(".", "/")).exists()
                          or (PACKAGE.parent / (f"{base}.{a.name}".replace(".", "/") + ".py")).exists()
                          else base for a in node.names}
    return found


def unit_of(module: str, ranks: dict[str, int]) -> str:
    name = module.removeprefix("mdp_trt").lstrip(".")
    candidates = [u for u in ranks if name == u or name.startswith(u + ".")]
    if not candidates:
        raise AssertionError(f"{module} belongs to no layer of docs/architecture.md: add its unit")
    return max(candidates, key=len)


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def placed(module: str, ranks: dict[str, int]) -> bool:
    """False for the package root and for packages that only hold units (``latency``): they
    import nothing, which ``test_containers_import_nothing`` checks."""
    name = module.removeprefix("mdp_trt").lstrip(".")
    return bool(name) and not any(u.startswith(name + ".") for u in ranks)


def test_containers_import_nothing():
    ranks = layers()
    assert {m: ts for m, ts in graph().items() if not placed(m, ranks) and ts} == {}


def test_every_module_belongs_to_a_layer():
    ranks = layers()
    for module in graph():
        if placed(module, ranks):
            unit_of(module, ranks)


def test_no_import_climbs_or_goes_sideways():
    ranks = layers()
    wrong = []
    for module, targets in graph().items():
        if not placed(module, ranks):
            continue
        unit = unit_of(module, ranks)
        for target in targets:
            if not placed(target, ranks):
                continue
            other = unit_of(target, ranks)
            if other != unit and ranks[other] >= ranks[unit]:
                wrong.append(f"{module} (layer {ranks[unit]}) imports {target} (layer {ranks[other]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_circular_imports():
    edges = graph()
    known = set(edges)
    edges = {m: {t for t in ts if t in known and t != m} for m, ts in edges.items()}
    # a package's __init__ re-exporting its own modules is not a cycle through them
    for m in edges:
        edges[m] = {t for t in edges[m] if not m.startswith(t + ".")}
    seen, on_path, cycles = set(), [], []

    def visit(m):
        if m in on_path:
            cycles.append(" -> ".join(on_path[on_path.index(m):] + [m]))
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for t in sorted(edges[m]):
            visit(t)
        on_path.pop()

    for m in sorted(edges):
        visit(m)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_public_names_only(script):
    private = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mdp_trt"):
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            private += [node.module] if any(p.startswith("_") for p in node.module.split(".")) else []
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in {"mdp_trt", "prune", "cli"}:
                private.append(ast.unparse(node))
    assert not private, f"{script.name} uses private names: {private}"
