"""The project's import graph: no circles, a pure ``sim/``, layers that only point down.

Every module under ``sim/ server/ clients/ bench/ scripts/`` is parsed (never imported) and its
``import`` statements become edges between project modules.  What counts:

* **Cycles**: every import that can run -- at module level *and* inside functions.  A
  function-level import that closes a circle is still a circle; it only hides it from the
  interpreter until the first call.  Imports under ``if TYPE_CHECKING:`` never run and are left
  out (an annotation may name its caller's type).  Importing ``a.b.c`` is an edge to ``a.b.c``
  only, not to the packages ``a`` and ``a.b`` whose ``__init__`` Python runs first: a package's
  ``__init__`` may import its own submodules to choose its public surface.
* **Layers**: every import, ``TYPE_CHECKING`` ones included, followed transitively through
  project modules, so a rule cannot be dodged through a middleman; each violation is reported
  with its whole chain, file and line of every step.

The rules (:data:`RULES`) are the architecture in ``shared/DESIGN-NEXT.md``: ``sim`` is a pure
world (no event loops, threads, sockets, clocks, argument parsing, nothing of the other
packages); ``server/runtime`` knows nothing of the websocket server; ``server`` never reaches up
into ``bench`` or ``clients``; ``clients`` never into ``bench``.  Commands the ``paratick`` front
door dispatches to are declared as entry points in ``pyproject.toml`` precisely so that
``server/cli.py`` needs no import of them.

The checker is plain functions over a graph (:func:`find_cycles`, :func:`layer_violations`), so
the tests below also run it on made-up graphs and on a made-up package written to ``tmp_path``.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Top-level folders whose modules make up the project.
PACKAGES = ("sim", "server", "clients", "bench", "scripts")


@dataclass(frozen=True)
class Edge:
    """One import statement: ``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    #: "module", "function" (inside a def or lambda) or "type-checking" (never runs).
    where: str = "module"

    def __str__(self) -> str:
        how = "" if self.where == "module" else f", {self.where}"
        return f"{self.source} -> {self.target} ({self.path}:{self.line}{how})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def parse_imports(module: str, source: str, *, path: str = "?",
                  is_package: bool = False) -> list[Edge]:
    """Every import in ``source`` as an edge to the full dotted name it names.

    ``from a import b`` yields ``a.b`` (which :func:`resolve` maps to module ``a.b`` if there is
    one, else to ``a``); relative imports are made absolute.
    """
    edges: list[Edge] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) \
                    and where == "module":
                inner = "function"
            if isinstance(child, ast.Import):
                edges.extend(Edge(module, alias.name, path, child.lineno, where)
                             for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".") if package else []
                    base = base[:len(base) - (child.level - 1)]
                    frm = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    frm = child.module or ""
                edges.extend(Edge(module, f"{frm}.{alias.name}" if alias.name != "*" else frm,
                                  path, child.lineno, where) for alias in child.names)
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), inner)
                continue
            visit(child, inner)

    visit(ast.parse(source, filename=path), "module")
    return edges


def resolve(name: str, modules: Iterable[str]) -> str | None:
    """The project module ``name`` refers to (longest dotted prefix), or None if external."""
    known = set(modules)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def project_imports(root: Path = ROOT, packages: Sequence[str] = PACKAGES,
                    ) -> dict[str, list[Edge]]:
    """Module name -> its imports, for every ``.py`` file under ``root/<package>``."""
    files = {module_name(p, root): p
             for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    return {mod: parse_imports(mod, p.read_text(encoding="utf-8"),
                               path=str(p.relative_to(root)), is_package=p.name == "__init__.py")
            for mod, p in files.items()}


def internal_graph(imports: Mapping[str, Sequence[Edge]], *, runs_only: bool,
                   ) -> dict[str, list[Edge]]:
    """Edges between project modules (``target`` resolved); ``runs_only`` drops TYPE_CHECKING."""
    graph: dict[str, list[Edge]] = {}
    for mod, edges in imports.items():
        out = graph.setdefault(mod, [])
        for e in edges:
            if runs_only and e.where == "type-checking":
                continue
            target = resolve(e.target, imports)
            if target is not None and target != mod:
                out.append(Edge(e.source, target, e.path, e.line, e.where))
    return graph


@dataclass(frozen=True)
class Cycle:
    """Modules that import each other in a circle (a strongly connected component), and one
    concrete circle through them: the chain of edges from the first member back to itself."""

    members: tuple[str, ...]
    chain: tuple[Edge, ...]

    def __str__(self) -> str:
        return (f"import cycle among {', '.join(self.members)}: "
                + "; ".join(str(e) for e in self.chain))


def find_cycles(graph: Mapping[str, Sequence[Edge]]) -> list[Cycle]:
    """Every strongly connected component with a cycle (Tarjan, iterative), in name order.

    Each comes with the shortest chain from its smallest module name back to itself, so the
    message shows how the circle closes.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = sorted({e.target for e in graph.get(node, ())})
            if i < len(targets):
                work.append((node, i + 1))
                nxt = targets[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                components.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    cycles = []
    for comp in sorted(components):
        members = set(comp)
        first = comp[0]
        if len(comp) == 1 and not any(e.target == first for e in graph.get(first, ())):
            continue
        chain = _path(graph, first, lambda m, first=first: m == first, within=members)
        if chain:
            cycles.append(Cycle(tuple(comp), tuple(chain)))
    return cycles


def _path(graph: Mapping[str, Sequence[Edge]], start: str, goal: Callable[[str], bool], *,
          within: set[str] | None = None) -> list[Edge] | None:
    """Shortest chain of edges from ``start`` to a module ``goal`` accepts (BFS; at least one
    edge, so a module can be its own goal)."""
    seen: set[str] = set()
    queue: deque[tuple[str, list[Edge]]] = deque([(start, [])])
    while queue:
        node, chain = queue.popleft()
        for e in sorted(graph.get(node, ()), key=lambda e: (e.target, e.line)):
            if within is not None and e.target not in within:
                continue
            if goal(e.target):
                return [*chain, e]
            if e.target not in seen:
                seen.add(e.target)
                queue.append((e.target, [*chain, e]))
    return None


@dataclass(frozen=True)
class Rule:
    """Modules ``sources`` selects must not reach, directly or through project modules, any
    import ``forbidden`` selects (by dotted name, project or external)."""

    name: str
    sources: Callable[[str], bool]
    forbidden: Callable[[str], bool]


def _under(*prefixes: str) -> Callable[[str], bool]:
    return lambda name: any(name == p or name.startswith(p + ".") for p in prefixes)


#: Modules of the websocket server that the runtime must stay independent of.
WEBSOCKET_SERVER = ("server.app", "server.connection", "server.transport", "server.gateway",
                    "websockets")
#: What a pure simulation never needs: event loops, threads, processes, sockets, clocks,
#: argument parsing, global random state -- and nothing of the packages built on top of it.
SIM_FORBIDDEN = ("asyncio", "threading", "socket", "time", "argparse", "select", "selectors",
                 "subprocess", "multiprocessing", "concurrent", "random", "websockets",
                 "server", "clients", "bench")

RULES = (
    Rule("sim is pure", _under("sim"), _under(*SIM_FORBIDDEN)),
    Rule("server/runtime knows no websocket server", _under("server.runtime"),
         _under(*WEBSOCKET_SERVER)),
    Rule("server never imports bench or clients", _under("server"), _under("bench", "clients")),
    Rule("clients never import bench", _under("clients"), _under("bench")),
)


def layer_violations(imports: Mapping[str, Sequence[Edge]], rules: Sequence[Rule] = RULES,
                     ) -> list[str]:
    """One message per (rule, source module) that breaks the rule, with the shortest chain.

    ``imports`` holds every module's raw edges (external targets included); a chain runs
    through project modules and ends with the first forbidden import it meets.
    """
    graph = internal_graph(imports, runs_only=False)
    out = []
    for rule in rules:
        direct = {m: sorted((e for e in edges if rule.forbidden(e.target)), key=lambda e: e.line)
                  for m, edges in imports.items()}
        for mod in sorted(m for m in imports if rule.sources(m)):
            if direct[mod]:
                chain = [direct[mod][0]]
            else:
                via = _path(graph, mod, lambda m, direct=direct: bool(direct.get(m)))
                if via is None:
                    continue
                chain = [*via, direct[via[-1].target][0]]
            out.append(f"{rule.name}: " + "; ".join(str(e) for e in chain))
    return out


# ---- the project --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imports() -> dict[str, list[Edge]]:
    return project_imports()


def test_every_package_is_parsed(imports: dict[str, list[Edge]]) -> None:
    for pkg in PACKAGES:
        assert any(m == pkg or m.startswith(pkg + ".") for m in imports), pkg
    assert "sim.world" in imports and "server.runtime.worker" in imports


def test_no_import_cycles(imports: dict[str, list[Edge]]) -> None:
    cycles = find_cycles(internal_graph(imports, runs_only=True))
    assert not cycles, "\n".join(str(c) for c in cycles)


def test_layers_point_down(imports: dict[str, list[Edge]]) -> None:
    problems = layer_violations(imports)
    assert not problems, "\n".join(problems)


# ---- the checker, on made-up graphs -------------------------------------------------------------
def _graph(spec: Mapping[str, Sequence[str]], where: str = "module") -> dict[str, list[Edge]]:
    return {src: [Edge(src, dst, f"{src.replace('.', '/')}.py", i + 1, where)
                  for i, dst in enumerate(dsts)] for src, dsts in spec.items()}


def test_a_reintroduced_cycle_is_found_with_its_chain() -> None:
    # The circle this repository had: the kernel factory in the base module.
    graph = _graph({"sim.shard": ["sim.kernels.python", "sim.config"],
                    "sim.kernels.python": ["sim.shard"], "sim.config": []})
    (cycle,) = find_cycles(graph)
    assert cycle.members == ("sim.kernels.python", "sim.shard")
    assert [(e.source, e.target) for e in cycle.chain] == [("sim.kernels.python", "sim.shard"),
                                                          ("sim.shard", "sim.kernels.python")]
    assert str(cycle) == ("import cycle among sim.kernels.python, sim.shard: "
                          "sim.kernels.python -> sim.shard (sim/kernels/python.py:1); "
                          "sim.shard -> sim.kernels.python (sim/shard.py:1)")


def test_every_cycle_is_reported_and_acyclic_graphs_pass() -> None:
    graph = _graph({"a": ["b"], "b": ["c"], "c": ["a"], "x": ["y"], "y": ["x"], "z": ["a"]})
    cycles = find_cycles(graph)
    assert [[e.source for e in c.chain] for c in cycles] == [["a", "b", "c"], ["x", "y"]]
    assert [c.members for c in cycles] == [("a", "b", "c"), ("x", "y")]
    assert find_cycles(_graph({"a": ["b", "c"], "b": ["c"], "c": []})) == []
    assert len(find_cycles(_graph({"a": ["a"]}))) == 1


def test_function_level_imports_close_cycles_but_type_checking_ones_do_not(
        tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("def make():\n    from pkg.impl import Impl\n    return Impl()\n")
    (pkg / "impl.py").write_text("from pkg.base import make\n\nclass Impl: ...\n")
    (pkg / "hint.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from pkg.impl import Impl\n")
    imports = project_imports(tmp_path, ["pkg"])
    (cycle,) = find_cycles(internal_graph(imports, runs_only=True))
    assert [e.source for e in cycle.chain] == ["pkg.base", "pkg.impl"]
    assert cycle.chain[0].where == "function"
    (pkg / "impl.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from pkg.base import make\n")
    assert find_cycles(internal_graph(project_imports(tmp_path, ["pkg"]), runs_only=True)) == []


def test_relative_and_from_imports_resolve_to_modules(tmp_path: Path) -> None:
    src = "from . import b\nfrom .b import f\nfrom .. import top\nimport os.path\n"
    edges = parse_imports("p.q.a", src)
    assert [e.target for e in edges] == ["p.q.b", "p.q.b.f", "p.top", "os.path"]
    mods = {"p", "p.q", "p.q.a", "p.q.b"}
    assert [resolve(e.target, mods) for e in edges] == ["p.q.b", "p.q.b", "p", None]
    assert [e.target for e in parse_imports("p.q", "from . import a\n", is_package=True)] \
        == ["p.q.a"]


def test_layer_rules_follow_chains_and_name_every_step() -> None:
    imports = _graph({"sim.world": ["sim.helper", "math"], "sim.helper": ["time"],
                      "server.runtime.worker": ["server.util"], "server.util": ["server.app"],
                      "server.app": ["websockets.asyncio"], "server.cli": ["bench.cli"],
                      "bench.cli": [], "clients.bots": ["server.protocol"],
                      "server.protocol": []})
    problems = layer_violations(imports)
    assert problems == [
        "sim is pure: sim.helper -> time (sim/helper.py:1)",
        "sim is pure: sim.world -> sim.helper (sim/world.py:1); "
        "sim.helper -> time (sim/helper.py:1)",
        "server/runtime knows no websocket server: server.runtime.worker -> server.util "
        "(server/runtime/worker.py:1); server.util -> server.app (server/util.py:1)",
        "server never imports bench or clients: server.cli -> bench.cli (server/cli.py:1)",
    ]


def test_type_checking_imports_count_for_layers() -> None:
    imports = _graph({"sim.shard": ["server.runtime"]}, where="type-checking")
    assert layer_violations(imports) == [
        "sim is pure: sim.shard -> server.runtime (sim/shard.py:1, type-checking)"]
