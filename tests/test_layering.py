"""Imports point down only: envs <- agents <- rollouts <- eval <- holderpo, and inside holderpo the
algorithm core <- the training application <- the command line.

Every import counts, also those inside functions (a lazy import that points up is still a
dependency that points up). The rules, from DESIGN.md:
- a package imports only its own layer and the layers below it;
- the algorithm core (losses, advantages, KL, schedules) imports only torch and itself;
- nothing imports the command line except the command line itself, and no command imports
  another command (shared code belongs in a library module);
- no two modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).parent.parent
LAYERS = ("envs", "agents", "rollouts", "eval", "holderpo")
CORE = {"holderpo.losses", "holderpo.advantages", "holderpo.kl", "holderpo.schedules"}
CORE_MAY_IMPORT = {"torch", "__future__", "collections", "dataclasses", "functools", "math", "typing"}
COMMAND_LINE = ("holderpo.cli", "holderpo.commands")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules that `path` imports anywhere in its body; `from pkg import mod` counts as
    `pkg.mod` where that is a module, and as `pkg` otherwise."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules it imports (project modules by full name, others by their top package)."""
    files = {module_name(p, root): p for layer in LAYERS for p in (root / layer).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        imports = imported_modules(path, name, set(files))
        graph[name] = {m if m in files else m.split(".")[0] for m in imports} - {name}
    return graph


def rank(module: str) -> float:
    top = module.split(".")[0]
    if module.startswith(COMMAND_LINE):
        return len(LAYERS)
    if module in CORE:
        return LAYERS.index("holderpo") - 0.5
    return LAYERS.index(top) if top in LAYERS else -1


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle among project modules, found by depth-first search."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def layering_violations(root: Path) -> list[str]:
    graph = import_graph(root)
    problems = []
    for module, imports in sorted(graph.items()):
        for target in sorted(imports):
            if module in CORE and target not in CORE and target not in CORE_MAY_IMPORT:
                problems.append(f"{module} -> {target}: the algorithm core imports only torch and itself")
            elif target in graph and rank(target) > rank(module):
                problems.append(f"{module} -> {target}: points up ({target.split('.')[0]} sits above)")
            elif module.startswith("holderpo.commands.") and target.startswith("holderpo.commands."):
                problems.append(f"{module} -> {target}: a command imports another command")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def test_every_import_points_down_and_none_forms_a_cycle():
    assert layering_violations(REPO) == []


def test_the_check_sees_imports_that_point_up(tmp_path):
    """The rules catch what they claim to: an upward lazy import, a core module importing the
    application, a command importing another, and a cycle."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "holderpo" / "commands").mkdir()
    (tmp_path / "holderpo" / "commands" / "__init__.py").write_text("")
    (tmp_path / "agents" / "models.py").write_text("def f():\n    from holderpo.checkpoint import x\n")
    (tmp_path / "holderpo" / "checkpoint.py").write_text("from agents.models import f\n")
    (tmp_path / "holderpo" / "losses.py").write_text("import numpy\nfrom holderpo import checkpoint\n")
    (tmp_path / "holderpo" / "commands" / "a.py").write_text("from holderpo.commands.b import _helper\n")
    (tmp_path / "holderpo" / "commands" / "b.py").write_text("_helper = 1\n")
    problems = layering_violations(tmp_path)
    assert any(p.startswith("agents.models -> holderpo.checkpoint: points up") for p in problems)
    assert any(p.startswith("holderpo.losses -> numpy") for p in problems)
    assert any(p.startswith("holderpo.losses -> holderpo.checkpoint") for p in problems)
    assert any(p.startswith("holderpo.commands.a -> holderpo.commands.b") for p in problems)
    assert any("cycle" in p and "agents.models" in p and "holderpo.checkpoint" in p for p in problems)
