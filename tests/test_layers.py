"""The layering contract (docs/architecture.md): imports between loopml's modules point down.

The layers, lowest first:

    base < store < tracking < data < train < models < monitor < loop < explanations / federated < client < serve / server < cli

`base` is the package's own top-level modules that everything may use (errors, config, files,
access, quiet, lazy). `client` is ``loopml.Client`` and ``loopml.register``, which join the
registry and the OOD gate. `serve` (the model server) and `server` (the tracking server) share a layer
and must not import each other. `cli*.py` and `__main__` are the top.

A module may import its own layer or any layer below it. Every import counts: module level
and inside functions (a function-level import is still a dependency; it only hides it from
import time), relative imports resolved. The exceptions that exist today are listed in
ALLOWED_UPWARD and ALLOWED_CYCLES, each with its reason and the issue that removes it; a new
upward import or a new module-level cycle fails this test with the importer, the imported
module and the rule it breaks.

Nothing here imports loopml: the source is read with `ast`, so a missing extra cannot hide
a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "loopml"

# Lowest first. A module's layer is its subpackage, or for a top-level module its name.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "config", "access", "quiet", "lazy", "files"},  # base: used by every layer
    {"store"},
    {"tracking"},
    {"data"},
    {"train"},
    {"models"},
    {"monitor"},
    {"loop"},  # the closed loop: labeling queue, labels, retrain, compare, promote, shadow, `loop run`
    {"explanations", "federated"},  # attributions (Captum): loopml.explain; federated training (Flower, Opacus)
    {"client"},  # loopml.Client: the public API on one store, over models and monitor
    {"serve", "server"},  # the model server and the tracking server; never each other
    {"cli", "cli_common", "cli_models", "cli_monitor", "cli_alerts", "cli_data", "cli_label", "cli_loop", "cli_explain", "cli_federated", "cli_import", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
SIBLINGS_APART = {("serve", "server"), ("server", "serve")}

# Upward (or sideways between serve and server) imports that exist today, (importer, imported)
# by module name, each with why it is there. Remove an entry when the import goes; never add
# one without a reason and an issue that removes it.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

# Cycles that exist today once imports inside functions are counted (there are none among
# module-level imports), each as the sorted tuple of its modules, with its reason.
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(importer: str, is_pkg: bool, level: int, module: str | None) -> str:
    """The absolute name a `from ... import` refers to (PEP 328)."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _known(name: str, modules: set[str]) -> str | None:
    """The loopml module `name` is, or the longest loopml module it lies in (a.b.func -> a.b)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


class _Imports(ast.NodeVisitor):
    def __init__(self, importer: str, is_pkg: bool, modules: set[str]) -> None:
        self.importer, self.is_pkg, self.modules = importer, is_pkg, modules
        self.found: list[tuple[str, int, str]] = []  # (imported module, line, kind)
        self._depth = 0
        self._type_checking = 0

    def _add(self, name: str, line: int) -> None:
        target = _known(name, self.modules)
        if target and target != self.importer:
            kind = "typing" if self._type_checking else "function" if self._depth else "module"
            self.found.append((target, line, kind))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("loopml"):
                self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.importer, self.is_pkg, node.level, node.module)
        if not base.startswith("loopml"):
            return
        for alias in node.names:
            # `from loopml.models import registry` imports a module; `from x import func` its module.
            self._add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.modules else base, node.lineno)

    def _nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_If(self, node: ast.If) -> None:
        # `if TYPE_CHECKING:` imports count for the layer rule (a type names its layer) but
        # never run, so they make no cycle.
        test = node.test
        checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if checking:
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)


def _graph() -> tuple[dict[str, list[tuple[str, int, str]]], dict[str, Path]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in sorted(files.items()):
        visitor = _Imports(name, _is_package(path), modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[name] = visitor.found
    return graph, files


def _layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    graph, _ = _graph()
    unplaced = sorted(m for m in graph if _layer_of(m) not in RANK)
    assert not unplaced, f"modules with no layer: {unplaced}; add them to LAYERS in tests/test_layers.py"


def test_imports_point_down():
    graph, files = _graph()
    broken: list[str] = []
    used: set[tuple[str, str]] = set()
    for importer, found in graph.items():
        for imported, line, _ in found:
            low, high = _layer_of(importer), _layer_of(imported)
            upward = RANK[high] > RANK[low] or (low, high) in SIBLINGS_APART
            # The package root is the public facade (`loopml.start_run`, `loopml.Trainer`,
            # `loopml.register`): it names every layer, only under TYPE_CHECKING and in its
            # lazy __getattr__, and no loopml module imports the root for those names.
            if not upward or importer == "loopml":
                continue
            if (importer, imported) in ALLOWED_UPWARD:
                used.add((importer, imported))
                continue
            rule = (
                f"'{low}' and '{high}' must not import each other"
                if (low, high) in SIBLINGS_APART
                else f"layer '{low}' (rank {RANK[low]}) must not import layer '{high}' (rank {RANK[high]})"
            )
            where = files[importer].relative_to(SRC.parents[1])
            message = f"{where}:{line}: {importer} imports {imported}: {rule}"
            if message not in broken:
                broken.append(message)
    assert not broken, (
        "imports that point up the layers (store < tracking < data < train < models < monitor < loop < explanations"
        " < client < serve / server < cli; see docs/architecture.md):\n  " + "\n  ".join(broken)
    )
    stale = sorted(set(ALLOWED_UPWARD) - used)
    assert not stale, f"ALLOWED_UPWARD lists imports that no longer exist, remove them: {stale}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _path_within(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle through the component's first module, for the message."""
    members, start = set(component), component[0]
    parents, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in parents:
                parents[w] = v
                queue.append(w)
    return component


def _edges(graph: dict[str, list[tuple[str, int, str]]], kinds: set[str]) -> dict[str, set[str]]:
    # A package's __init__ importing its own submodules is how a package re-exports, and the
    # root `loopml` is the lazy public facade: neither is a fault, so edges out of them to
    # their own children are left out (edges into a package __init__ are kept).
    return {
        importer: {imported for imported, _, kind in found if kind in kinds and not imported.startswith(importer + ".")}
        for importer, found in graph.items()
        if importer != "loopml"
    }


def _check_cycles(edges: dict[str, set[str]], allowed: dict[tuple[str, ...], str], what: str) -> None:
    found = _cycles(edges)
    new = [c for c in found if tuple(c) not in allowed]
    assert not new, f"{what} among loopml modules (see docs/architecture.md):\n  " + "\n  ".join(
        " -> ".join(_path_within(edges, c)) for c in new
    )
    stale = sorted(set(allowed) - {tuple(c) for c in found})
    assert not stale, f"tests/test_layers.py allows cycles that no longer exist, remove them: {stale}"


def test_no_module_level_import_cycles():
    # Imports run at import time: a cycle here breaks depending on which module is imported first.
    graph, _ = _graph()
    _check_cycles(_edges(graph, {"module"}), {}, "module-level import cycles")


def test_no_import_cycles_hidden_in_functions():
    # An import inside a function that closes a cycle is a cycle postponed, not removed: the
    # two modules cannot be understood, tested or moved apart. TYPE_CHECKING imports do not run
    # and are left out.
    graph, _ = _graph()
    _check_cycles(_edges(graph, {"module", "function"}), ALLOWED_CYCLES, "import cycles (counting imports in functions)")


@pytest.mark.parametrize(
    ("importer", "is_pkg", "level", "module", "expected"),
    [
        ("loopml.models.registry", False, 1, "runtime", "loopml.models.runtime"),
        ("loopml.models.registry", False, 2, "monitor.ood", "loopml.monitor.ood"),
        ("loopml.models", True, 1, "registry", "loopml.models.registry"),
        ("loopml.models", True, 2, "errors", "loopml.errors"),
        ("loopml.serve.app", False, 1, None, "loopml.serve"),
    ],
)
def test_relative_imports_resolve(importer, is_pkg, level, module, expected):
    assert _resolve(importer, is_pkg, level, module) == expected


def test_an_upward_import_is_caught(tmp_path):
    # The checker itself: a function-level import from store up into models is found.
    code = "def f():\n    from ..models import registry\n"
    visitor = _Imports("loopml.store.tracking", False, {"loopml.store.tracking", "loopml.models.registry"})
    visitor.visit(ast.parse(code))
    assert visitor.found == [("loopml.models.registry", 2, "function")]


# -- imports inside functions --------------------------------------------------------------------
#
# An import of a loopml module inside a function is right only when it keeps something heavy or
# optional out of import time: the imported module (with what it imports at module level, and a
# lazy package attribute's module) brings in one of HEAVY that the importing module does not
# already bring in. Any other one only dodges a cycle (the cycle tests above forbid those anyway)
# or nothing at all, and belongs at the top of the file where a reader sees the dependency.

# Third-party packages whose import costs noticeable time or memory (numpy: 60 ms, which `loopml
# --help` and the tracking client's import do without), or that come with an extra that may be missing.
HEAVY = {
    "alembic", "executorch", "fastapi", "httptools", "httpx", "matplotlib", "onnx", "onnxruntime", "onnxscript",
    "pandas", "plotly", "prometheus_client", "psycopg", "pyarrow", "pydantic", "rich", "scipy", "sklearn",
    "sqlalchemy", "starlette", "torch", "numpy", "torchao", "typer", "uvicorn", "uvloop", "captum", "flwr", "opacus",
    "torch_geometric", "boto3",
}


class _AnyName(dict):  # type: ignore[type-arg]
    """Every attribute of a package with a hand-written __getattr__ resolves to LAZY_UNKNOWN."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return LAZY_UNKNOWN


class _Costs(ast.NodeVisitor):
    """Module-level third-party imports (top-level names) and function-level loopml imports of one module."""

    def __init__(self, importer: str, is_pkg: bool, modules: set[str], lazy: dict[str, dict[str, str]]) -> None:
        self.importer, self.is_pkg, self.modules, self.lazy = importer, is_pkg, modules, lazy
        self.third: set[str] = set()
        self.local: set[str] = set()  # loopml modules imported at module level
        self.in_functions: list[tuple[str, int]] = []
        self._depth = self._type_checking = 0

    def _add(self, name: str, line: int) -> None:
        if not name.startswith("loopml"):
            if not self._depth and not self._type_checking:
                self.third.add(name.split(".")[0])
            return
        target = _known(name, self.modules)
        if not target or target == self.importer or self._type_checking:
            return
        if self._depth:
            self.in_functions.append((target, line))
        else:
            self.local.add(target)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.importer, self.is_pkg, node.level, node.module)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full not in self.modules and alias.name in self.lazy.get(base, {}):
                full = self.lazy[base][alias.name]  # a lazy package attribute imports its module
                if full == LAZY_UNKNOWN:
                    if self._depth and not self._type_checking:
                        self.in_functions.append((LAZY_UNKNOWN, node.lineno))
                    continue
            self._add(full if full in self.modules else base, node.lineno)

    def _nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)


LAZY_UNKNOWN = "?"  # a package __getattr__ written by hand: what it imports is not read here


def _lazy_maps(files: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Each package's `_LAZY = {"name": "module"}` (loopml.lazy.lazy_exports); a package with a
    hand-written `__getattr__` maps every name to LAZY_UNKNOWN (counted as heavy: it may import anything)."""
    out: dict[str, dict[str, str]] = {}
    for name, path in files.items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
            out[name] = _AnyName()
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
                    out[name] = {
                        k.value: v.value
                        for k, v in zip(node.value.keys, node.value.values)
                        if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                    }
    return out


def _function_imports_without_cost() -> list[str]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules, lazy = set(files), _lazy_maps(files)
    costs = {}
    for name, path in files.items():
        visitor = _Costs(name, _is_package(path), modules, lazy)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        parts = name.split(".")
        visitor.local |= {".".join(parts[:i]) for i in range(1, len(parts))} - {name}  # parents run first
        costs[name] = visitor

    def brings(module: str) -> set[str]:
        seen, todo, out = set(), [module], set()
        while todo:
            m = todo.pop()
            if m in seen or m not in costs:
                continue
            seen.add(m)
            out |= costs[m].third
            todo.extend(costs[m].local)
        return out

    free = []
    for name, visitor in sorted(costs.items()):
        have = brings(name)
        for target, line in visitor.in_functions:
            if target == LAZY_UNKNOWN:
                continue
            if not (brings(target) - have) & HEAVY:
                free.append(f"{files[name].relative_to(SRC.parents[1])}:{line}: {name} imports {target} in a function")
    return sorted(set(free))


def test_imports_in_functions_keep_something_heavy_out():
    free = _function_imports_without_cost()
    assert not free, (
        "imports of loopml modules inside functions that keep nothing heavy out of import time (nothing in"
        " HEAVY that the module does not import already): move them to the top of the file\n  " + "\n  ".join(free)
    )


def test_a_function_import_that_costs_nothing_is_caught():
    # The checker itself, on two modules written here: a light module's function-level import of
    # another light module is flagged; one of torch's users is not.
    files = {"loopml.a": "import json\n\ndef f():\n    from . import b\n", "loopml.b": "import os\n"}
    modules = set(files) | {"loopml.c"}
    seen = []
    for name, code in files.items():
        v = _Costs(name, False, modules, {})
        v.visit(ast.parse(code))
        seen.append((name, v.third, v.in_functions))
    assert seen[0] == ("loopml.a", {"json"}, [("loopml.b", 4)])
    assert seen[1] == ("loopml.b", {"os"}, [])


# -- private names stay in their module --------------------------------------------------------
#
# A name with a leading underscore is its module's own business. What another module needs is
# public API of the module that owns it (a method, a property, a function without the underscore).


def _private_definitions(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_reaches() -> list[str]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in files.items()}
    own = {name: _private_definitions(tree) for name, tree in trees.items()}
    everywhere = set().union(*own.values())
    found = []
    for name, tree in sorted(trees.items()):
        where = files[name].relative_to(SRC.parents[1])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(name, _is_package(files[name]), node.level, node.module)
                if base.startswith("loopml") and base != name:
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            found.append(f"{where}:{node.lineno}: from {base} import {alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                # another loopml module's private member (a third-party one, e.g. a NamedTuple's
                # _asdict or SQLAlchemy's Row._mapping, is that library's documented API)
                if node.attr in everywhere and node.attr not in own[name]:
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_reaches_into_another_module_s_private_names():
    found = _private_reaches()
    assert not found, (
        "private names used outside the module that defines them; make what is needed public API of"
        " that module:\n  " + "\n  ".join(found)
    )
