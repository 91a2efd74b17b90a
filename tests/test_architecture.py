"""The layers of docs/architecture.md, enforced: what each package may import, and no import cycle.

Two kinds of check, in the style of tiled's no-heavy-imports test:

- at run time, a fresh interpreter (a subprocess, outside the repository) imports one package and reports
  which modules that loaded: an engine loads no transport, storage or service stack; the beamline side
  loads no broker, worker or storage module;
- statically, every ``import`` in the package's source (module level or inside a function) is read with
  :mod:`ast`: each package imports only the layers below it, and the module graph has no cycle.

Each check is also run on a case that breaks it, so a check that could never fail would fail here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: import name → source folder (the beamline-side folders install under the xafs_stream namespace)
SOURCES = {"xafs_stream": REPO / "xafs_stream", "xafs_stream.plans": REPO / "plans",
           "xafs_stream.callbacks": REPO / "callbacks",
           "xafs_stream.simulated_devices": REPO / "simulated_devices"}

SERVICE_STACK = ("zmq", "tiled", "bluesky", "ophyd", "fastapi", "uvicorn", "xafs_stream.transport",
                 "xafs_stream.storage", "xafs_stream.worker", "xafs_stream.service", "xafs_stream.web")
BEAMLINE_FORBIDDEN = ("xafs_stream.transport.broker", "xafs_stream.worker", "xafs_stream.storage",
                      "xafs_stream.service")

#: layer → the layers it may import (docs/architecture.md, "Who may import whom"); "faces" import anything
ALLOWED = {
    "core": set(),
    "config": set(),
    "data": set(),
    "testing": set(),  # helpers for tests and benchmarks (a free port, a throw-away PostgreSQL)
    "engines": set(),
    "io": {"engines", "data"},
    "analyses": {"core", "config", "engines", "io", "simulated_devices"},
    "plans": {"core", "engines"},  # the adaptive scan's design agent (pure science), to_json_safe
    "callbacks": {"core"},
    "simulated_devices": {"data", "io"},
    "transport": {"core", "config", "storage.layout"},  # ResultEvent.read reads a result through the layout
    "storage": {"core"},
    "worker": {"core", "config", "analyses", "transport", "storage", "callbacks"},
    # batch work on Dask: the live path's science and processing chain, run elsewhere; never Tiled itself
    "batch": {"core", "config", "engines", "io", "analyses", "worker"},
}
FACES = {"client", "cli", "web", "service", "service_info", "results", "demo", "xafs_stream"}


def loaded_modules(module: str, cwd: Path) -> list[str]:
    """Modules in ``sys.modules`` after a fresh interpreter imports ``module`` (run outside the repository,
    so that the repository's folders are not importable by their own names)."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def offending(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("engine", ["xafs", "spm", "bayes", "imaging"])
def test_an_engine_loads_no_transport_storage_or_service_stack(engine, tmp_path):
    assert offending(loaded_modules(f"xafs_stream.engines.{engine}", tmp_path), SERVICE_STACK) == []


@pytest.mark.parametrize("side", ["plans", "callbacks", "simulated_devices"])
def test_the_beamline_side_loads_no_broker_worker_or_storage(side, tmp_path):
    assert offending(loaded_modules(f"xafs_stream.{side}", tmp_path), BEAMLINE_FORBIDDEN) == []


def test_the_import_check_sees_a_forbidden_import(tmp_path):
    """The same check on a module that does load zmq and storage (the worker) reports them."""
    found = offending(loaded_modules("xafs_stream.worker", tmp_path), SERVICE_STACK)
    assert "zmq" in found and "xafs_stream.storage.layout" in found


# ------------------------------------------------------------------------------------------ static graph


def package_modules(sources: dict[str, Path]) -> dict[str, Path]:
    """Module name → source file of every module under ``sources``."""
    out = {}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if package == "xafs_stream" and parts and f"xafs_stream.{parts[0]}" in sources:
                continue  # the folder of another import name (not expected inside xafs_stream/)
            out[name] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (a ``from x import y`` of a submodule
    counts as importing that submodule)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(sources: dict[str, Path]) -> dict[str, set[str]]:
    modules = package_modules(sources)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        source = layer(module)
        if source in FACES:
            continue
        allowed = ALLOWED[source]
        for target in sorted(targets):
            target_layer = layer(target)
            sub = ".".join(target.split(".")[1:3])
            if target_layer != source and target_layer not in allowed and sub not in allowed:
                out.append(f"{module} imports {target}")
    return out


def test_every_layer_is_known():
    layers = {layer(m) for m in import_graph(SOURCES)}
    assert layers <= set(ALLOWED) | FACES, layers - set(ALLOWED) - FACES


def test_each_layer_imports_only_the_layers_below_it():
    assert layer_violations(import_graph(SOURCES)) == []


def test_no_import_cycle_inside_the_package():
    assert cycles(import_graph(SOURCES)) == []


def test_the_static_checks_see_a_cycle_and_a_layer_violation(tmp_path):
    """A small package in which an engine imports the worker and the worker imports the engine back."""
    pkg = tmp_path / "xafs_stream"
    for path, text in {"__init__.py": "", "engines/__init__.py": "", "worker/__init__.py": "",
                       "engines/fit.py": "def f():\n    from ..worker import loop\n",
                       "worker/loop.py": "from ..engines.fit import f\n"}.items():
        (pkg / path).parent.mkdir(parents=True, exist_ok=True)
        (pkg / path).write_text(text)
    graph = import_graph({"xafs_stream": pkg})
    assert cycles(graph) == [["xafs_stream.engines.fit", "xafs_stream.worker.loop"]]
    assert layer_violations(graph) == ["xafs_stream.engines.fit imports xafs_stream.worker.loop",
                                       "xafs_stream.worker.loop imports xafs_stream.engines.fit"]


def test_at_most_eight_modules_at_the_package_root():
    root = sorted(p.name for p in (REPO / "xafs_stream").glob("*.py"))
    assert len(root) <= 8, root
