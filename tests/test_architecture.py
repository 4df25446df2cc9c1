"""The house: stages as packages whose dependencies point one way, no import cycles, short functions.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "imgcls"

# Lower layers never import higher ones; a unit may import itself and anything below it.
LAYERS = [
    {"errors", "console", "pages", "metrics", "config", "version"},
    {"record"},
    {"data", "models"},
    {"runtime"},
    {"reporting"},
    {"engine"},
    {"deploy"},
    {"cli", "__init__", "__main__"},
]
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """imgcls modules imported anywhere in the file (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("imgcls")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("imgcls"):
                continue
            for alias in node.names:  # `from . import distributed` imports a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    return {m for m in found if m != name}


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    unit = _unit(module)
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def test_every_module_belongs_to_a_layer():
    units = {_unit(m) for m in _graph()}
    placed = set().union(*LAYERS)
    assert units <= placed, f"place these in LAYERS: {sorted(units - placed)}"


def test_dependencies_point_down_the_layers():
    wrong = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
             if _layer(d) > _layer(m) and _unit(m) not in ("cli", "__init__", "__main__")]
    assert not wrong, "imports that point up the layers:\n" + "\n".join(sorted(wrong))


def test_deploy_runs_models_without_training_code():
    """predict, serve and export reach the network through runtime/, never through engine/ (training)."""
    wrong = sorted(f"{m} -> {d}" for m, deps in _graph().items() for d in deps
                   if _unit(m) == "deploy" and _unit(d) == "engine")
    assert not wrong, "deploy imports training code:\n" + "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    graph = {m: {d for d in deps if d != "imgcls"} for m, deps in _graph().items()}  # the lazy facade
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_long_functions():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over the limit:\n" + "\n".join(long)


def test_ci_script_sets_ci_before_the_tests():
    """With CI set, a missing browser fails the browser tests instead of skipping them; .ci/run sets it itself."""
    lines = [line.strip() for line in (PACKAGE.parent / ".ci" / "run").read_text().splitlines()]
    runs_tests = next(i for i, line in enumerate(lines) if line == "pytest" or line.startswith("pytest "))
    assert "export CI=true" in lines[:runs_tests]
