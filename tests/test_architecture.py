"""The layers of docs/architecture.md, checked on the import graph of the source tree.

Every `import` counts: at module level, inside functions, and under `TYPE_CHECKING`, because a
type-only cycle is still a cycle for the reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("router", "policies", "engine_server", "kernels")
MAX_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imported_names(path: Path) -> Iterator[str]:
    """Every absolute module name the file imports (ours without the `triage_router.` prefix)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` may import the module a.b.c or a name of a.b.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            yield name.removeprefix("triage_router.")


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {n for n in _imported_names(path) if n in MODULES and n != name}
    return graph


GRAPH = _graph()
EXTERNAL = {name: {n.split(".")[0] for n in _imported_names(path)} for name, path in MODULES.items()}


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_there_is_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def _violations(rule: str, sources: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{rule}: {module} imports {target}"
        for module, targets in sorted(GRAPH.items()) if _in(module, *sources)
        for target in sorted(targets) if _in(target, *forbidden) and not _in(target, *allowed)
    ]


def test_the_layers() -> None:
    problems = (
        # policies/ decides; it is the bottom layer and everyone's.
        _violations("policies is the bottom layer", ("policies",), ("router", "engine_server", "kernels"))
        # kernels/ are the engine's; they know nothing of the rest.
        + _violations("kernels stand alone", ("kernels",), ("router", "engine_server", "policies"))
        # The engine shares exactly one module with the router: OpenAI's error shape.
        + _violations("the engine imports only router.errors", ("engine_server",), ("router",), ("router.errors",))
        + _violations("the router never imports the engine", ("router",), ("engine_server", "kernels"))
        # Inside router/: the rooms below the HTTP edge never reach up into it.
        + _violations("router rooms stay below the edge",
                      ("router.tagging", "router.prediction", "router.routing", "router.translation"),
                      ("router.http", "router.cli"))
        + _violations("the HTTP edge does not import the command line", ("router.http",), ("router.cli",))
        + _violations("routing does not depend on tagging or prediction",
                      ("router.routing",), ("router.tagging", "router.prediction"))
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", ["router", "policies"])
def test_no_torch_and_no_io_where_none_belongs(package: str) -> None:
    heavy = {"torch", "triton", "transformers", "numpy"}
    io = {"httpx", "aiohttp", "litestar", "socket", "argparse", "asyncio", "subprocess"} if package == "policies" else set()
    problems = [f"{module} imports {sorted(names & (heavy | io))}"
                for module, names in sorted(EXTERNAL.items())
                if _in(module, package) and names & (heavy | io)]
    assert not problems, "\n".join(problems)


def test_no_module_is_a_god_object() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_the_graph_sees_the_tree() -> None:
    # The checks above are only as good as the graph: it must find our modules and their imports.
    assert "router.http.proxy" in GRAPH and "policies.batching" in GRAPH["engine_server.scheduler"]
    assert "router.errors" in GRAPH["engine_server.errors"]
