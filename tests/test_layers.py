"""The package's imports run one way: commands on top; `pbt/`, `train/`, `analysis/`, `outputs/`
below them in that order; `accel/` (beside `outputs/`) above the model it speeds up; `model/`,
`data/`, `config/` and the small shared modules at the bottom. Every import is found by walking the source (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import autolfads

PACKAGE = Path(autolfads.__file__).parent

#: Layer of each top-level part of the package, high to low; a module may import its own layer
#: (without a cycle) and any lower one, never a higher one.
LAYERS = {
    "autolfads": 6,  # the package's public names
    "api": 5,  # autolfads.fit/load: the commands' functions on arrays
    "demo": 5,
    "workflow": 5,
    "cli": 6,
    "commands": 5,
    "pbt": 4,
    "train": 3,
    "analysis": 2,
    "outputs": 1,
    "accel": 1,
    "model": 0,
    "data": 0,
    "config": 0,
    "errors": 0,
    "parts": 0,
    "progress": 0,
    "_atomic": 0,
    "_memory": 0,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str:
    """The top-level part of `autolfads.x.y` ("x"; "autolfads" for the package itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def imports_of(path: Path) -> set[str]:
    """Every `autolfads...` module that `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "autolfads":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "autolfads")
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_part_of_the_package_has_a_layer():
    missing = sorted({part(m) for m in import_graph()} - set(LAYERS))
    assert not missing, f"give these a layer in LAYERS: {missing}"


def test_no_import_runs_up_a_layer():
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if LAYERS[part(target)] > LAYERS[part(module)]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    modules = set(graph)

    def resolve(target: str) -> str | None:
        while target and target not in modules:  # `from autolfads.x import y` of a name
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {t for t in map(resolve, graph[m]) if t and t != m} for m in graph}
    # a package's __init__ re-exporting its own modules is not a cycle worth naming
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from autolfads.pbt.policy import exploit\n")
    assert imports_of(source) == {"autolfads.pbt.policy"}
