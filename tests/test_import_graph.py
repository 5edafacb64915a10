"""The import graph of ``cpsl_tf`` (issue 17): no circle, and the method apart from the training machinery.

Read from the source (``ast``), so every import counts: at module level, inside functions (imported on
use) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cpsl_tf.run_layout import STAGES
from tests.conftest import REPO

PACKAGE = REPO / "cpsl_tf"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module ``name`` is, or the one it is an attribute of (``pkg.module.Class``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``cpsl_tf`` modules it imports (``from pkg import module`` counts the module)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                imported |= {f"{base}.{alias.name}" for alias in node.names}
        targets = {_resolve(name, modules) for name in imported}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_package_has_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_the_method_imports_nothing_of_the_training_machinery():
    """``cpsl_tf.cpsl`` (the method) reaches the optimiser through an interface
    (``cpsl_tf.gradients.StepOptimizer``), not ``cpsl_tf.training``."""
    offending = {module: sorted(t for t in targets if t.startswith("cpsl_tf.training"))
                 for module, targets in import_graph().items() if module.startswith("cpsl_tf.cpsl")}
    assert {module: targets for module, targets in offending.items() if targets} == {}


def test_the_stage_registry_is_the_run_layouts_stages():
    from cpsl_tf.training.stages import registry

    assert tuple(registry()) == STAGES
