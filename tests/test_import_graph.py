"""The import graph of ``skyhop`` and of ``gateway_vm`` is acyclic, and ``skyhop``
imports nothing above it (DESIGN.md's dependency rule).

The graph is read from the source with :mod:`ast`, no module is imported. Every
``import`` counts, at the top of a module or inside a function (a function-level
import is how a cycle hides), except those under ``if TYPE_CHECKING:``. Importing
``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, so an edge to a module is
an edge to each package above it too (the way ``import skyhop.controlplane.filters``
used to load the whole service through ``controlplane/__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"skyhop": ROOT / "shared" / "skyhop", "gateway_vm": ROOT / "gateway_vm"}
ABOVE_SKYHOP = ("gateway_vm", "functions", "infra_cdk")


def _modules(top: str) -> dict[str, Path]:
    base = PACKAGES[top]
    found: dict[str, Path] = {}
    for path in sorted(base.rglob("*.py")):
        parts = [top, *path.relative_to(base).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    """Every module name an import statement of ``tree`` names (``from a import b``
    names both ``a`` and ``a.b``: which one is a module is settled by the caller)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"
        stack.extend(ast.iter_child_nodes(node))


def _graph(top: str) -> dict[str, set[str]]:
    modules = _modules(top)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target in _imports(tree, name, path.name == "__init__.py"):
            # the module itself and every package above it run on import
            while target:
                if target in modules and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
                target = target.rpartition(".")[0]
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("top", sorted(PACKAGES))
def test_import_graph_is_acyclic(top: str):
    graph = _graph(top)
    assert len(graph) > 10, f"too few modules found under {PACKAGES[top]}"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_skyhop_imports_nothing_above_it():
    offenders = []
    for name, path in _modules("skyhop").items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target in _imports(tree, name, path.name == "__init__.py"):
            if target.split(".")[0] in ABOVE_SKYHOP:
                offenders.append(f"{name} imports {target}")
    assert offenders == []


def test_importing_a_controlplane_leaf_does_not_load_the_service():
    graph = _graph("skyhop")
    seen: set[str] = set()
    todo = ["skyhop.controlplane.filters", "skyhop.models"]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    assert "skyhop.controlplane.service" not in seen


def test_deploy_is_a_leaf_of_the_cli():
    """Only the CLI reaches skyhop.deploy (and by name, lazily): a copy never loads
    the deploy machinery and its SDKs."""
    graph = _graph("skyhop")
    users = sorted(
        name
        for name, targets in graph.items()
        if not name.startswith("skyhop.deploy")
        and any(t == "skyhop.deploy" or t.startswith("skyhop.deploy.") for t in targets)
    )
    assert users == []


CLOUD_SDKS = ("boto3", "botocore", "google", "googleapiclient", "azure")
# the protocol modules and the cloud-free implementations of each adapter package
NOT_ADAPTERS = {"base", "memory", "local", "sqlite", "mtime", "rules", "counters", "openers"}
ADAPTER_PACKAGES = (
    "skyhop.clouds",
    "skyhop.stores",
    "skyhop.state",
    "skyhop.queues",
    "skyhop.compute",
    "skyhop.crypto.kms",
    "skyhop.deploy",
)


def test_cloud_sdks_only_in_adapters_and_kits():
    """Cloud SDKs appear only in a cloud's adapter files and its kit in clouds/:
    never in controlplane/, the planner, the models or a protocol module."""
    offenders = []
    for name, path in _modules("skyhop").items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        sdks = {
            t
            for t in _imports(tree, name, path.name == "__init__.py")
            if t.split(".")[0] in CLOUD_SDKS
        }
        if not sdks:
            continue
        in_adapter = any(name == p or name.startswith(p + ".") for p in ADAPTER_PACKAGES)
        if not in_adapter or name.rpartition(".")[2] in NOT_ADAPTERS:
            offenders.append(f"{name} imports {sorted(sdks)[0]}")
    assert offenders == []


def test_every_registry_entry_names_something_that_exists():
    """Registries name implementations as "module:attr" strings, which the graph
    above cannot see: each must import and name an attribute that is there."""
    from skyhop.compute import base as compute_base
    from skyhop.crypto import keys
    from skyhop.queues import base as queues_base
    from skyhop.registry import resolve
    from skyhop.state import base as state_base
    from skyhop.stores import base as stores_base

    tables = {
        "stores": stores_base._REGISTRY,
        "manifests": state_base._REGISTRY,
        "queues": queues_base._REGISTRY,
        "control queues": queues_base._CONTROL_REGISTRY,
        "compute": compute_base._REGISTRY,
        "key wraps": keys._WRAPPERS,
    }
    for what, table in tables.items():
        for name, target in table.items():
            assert callable(resolve(target, f"{what} {name}")), target


def test_a_registry_entry_whose_dependency_is_missing_says_so():
    from skyhop.errors import UsageError
    from skyhop.registry import resolve

    with pytest.raises(
        UsageError, match=r"queue 'x://' needs an optional dependency .*no_such_sdk"
    ):
        resolve("no_such_sdk.module:Thing", "queue 'x://'")


def test_the_library_has_no_type_ignore():
    """What mypy finds in skyhop and gateway_vm is fixed by typing it (a cast with
    its reason, a typed wrapper around an unannotated SDK call), never silenced."""
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for top in ("shared/skyhop", "gateway_vm")
        for path in sorted((ROOT / top).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "type: ignore" in line
    ]
    assert found == []
