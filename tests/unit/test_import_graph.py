"""The import graph of ``src/tuneserve``: no cycles, and no reaching into another package's
private modules or names.

Every module is parsed with :mod:`ast`; every ``import`` counts, at module level or inside
a function (an import cycle hidden inside a function is still a cycle). Only imports under
``if TYPE_CHECKING:`` are left out: they never run.

What an import depends on:
    * ``import a.b.c`` and ``from a.b.c import name`` depend on module ``a.b.c`` (a package
      means its ``__init__``); ``from a.b import c`` where ``c`` is a submodule depends on
      ``a.b.c``. Relative imports are resolved against the importing module's package.
    * Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``. That is a
      dependency only on the packages the importing module is not itself inside: a module
      of ``a.b`` importing its sibling ``a.b.c`` finds ``a.b`` initialized (or being
      initialized, which is what let it run), so a package ``__init__`` that re-exports its
      submodules makes no cycle with them. A module outside ``a.b`` does depend on
      ``a.b``'s ``__init__``, and with it on everything that ``__init__`` imports.
    * A submodule that names its own package (``from a.b import name``, ``from . import
      name`` where ``name`` is no submodule) depends on the package's ``__init__``: if that
      ``__init__`` imports the submodule, that is a real cycle, and the name may not be
      bound yet when the submodule runs.

What is private: a module or name whose last part starts with ``_`` (not a dunder).
    * A private module ``a.b._m`` belongs to package ``a.b``: modules inside ``a.b`` (and
      its subpackages) may import it, nothing else may. Private modules at the top of the
      root package (``tuneserve._version``) belong to the whole library.
    * A private name defined in a subpackage's module belongs to that subpackage (its
      modules share their helpers). A private name of a top-level module
      (``tuneserve.package._x``) or of the root ``__init__`` belongs to that module only:
      each top-level module is a package of its own.
    A helper a second package needs is public API of the package that owns it, imported
    from that package (see docs/STYLE.md).

Not covered: attribute access on an imported module (``mod._x``) and
``importlib.import_module`` strings (the root ``__init__`` loads its exports lazily).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "tuneserve"


@dataclass(frozen=True)
class Import:
    """One import of a module of the tree: what it names, where it is written."""

    importer: str
    target: str  # the module imported (a package means its __init__)
    name: str | None  # the name taken from ``target`` when it is no submodule
    file: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ImportGraph:
    """The modules of a tree (``name -> file``), which are packages, and their imports."""

    root: str
    files: dict[str, Path]
    packages: set[str]
    imports: list[Import]

    def package_of(self, module: str) -> str:
        """The package a module is in (a package ``__init__`` is in its own package)."""
        return module if module in self.packages else module.rpartition(".")[0]

    def edges(self) -> dict[str, dict[str, Import]]:
        """``importer -> {module it depends on: the first import that makes it so}``."""
        out: dict[str, dict[str, Import]] = defaultdict(dict)
        for imp in self.imports:
            inside = _ancestors(self.package_of(imp.importer))
            parts = imp.target.split(".")
            parents = [".".join(parts[:i]) for i in range(1, len(parts))]  # they run first
            needed = [*(p for p in parents if p not in inside), imp.target]
            for module in needed:
                if module in self.files and module != imp.importer:
                    out[imp.importer].setdefault(module, imp)
        return out


def _ancestors(package: str) -> set[str]:
    parts = package.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def scan(src: Path, root: str) -> ImportGraph:
    """Parse every module of package ``root`` under ``src`` and collect its imports."""
    files: dict[str, Path] = {}
    packages: set[str] = set()
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
            packages.add(".".join(parts))
        files[".".join(parts)] = path
    graph = ImportGraph(root, files, packages, [])
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph.imports += _imports(graph, module, path.relative_to(src), tree)
    return graph


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(nodes: list[ast.AST]) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``nodes``, at any depth, except where only type checkers
    look (the body of ``if TYPE_CHECKING:``; its ``else`` runs)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            found += _statements(list(node.orelse))
        else:
            found += _statements(list(ast.iter_child_nodes(node)))
    return found


def _imports(graph: ImportGraph, module: str, rel: Path, tree: ast.Module) -> list[Import]:
    out = []
    for stmt in _statements([tree]):
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name == graph.root or alias.name.startswith(graph.root + "."):
                    out.append(Import(module, _known(graph, alias.name), None, rel, stmt.lineno))
            continue
        assert isinstance(stmt, ast.ImportFrom)
        if stmt.level:
            package = graph.package_of(module).split(".")
            base_parts = package[: len(package) - (stmt.level - 1)]
            base = ".".join([*base_parts, *([stmt.module] if stmt.module else [])])
        else:
            base = stmt.module or ""
        if not (base == graph.root or base.startswith(graph.root + ".")):
            continue
        for alias in stmt.names:
            submodule = f"{base}.{alias.name}"
            if submodule in graph.files:
                out.append(Import(module, submodule, None, rel, stmt.lineno))
            else:
                name = None if alias.name == "*" else alias.name
                out.append(Import(module, _known(graph, base), name, rel, stmt.lineno))
    return out


def _known(graph: ImportGraph, dotted: str) -> str:
    """The longest prefix of ``dotted`` that is a module of the tree (a misspelled or
    missing module still counts as an import of its nearest package)."""
    parts = dotted.split(".")
    while len(parts) > 1 and ".".join(parts) not in graph.files:
        parts.pop()
    return ".".join(parts)


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _name_owner(graph: ImportGraph, module: str) -> tuple[str, bool]:
    """Who the private names of ``module`` belong to, and whether that is a package whose
    modules share them (``True``) or the module alone."""
    package = graph.package_of(module)
    if package == graph.root:  # a top-level module or the root __init__: on its own
        return module, False
    return package, True


def private_imports(graph: ImportGraph) -> list[str]:
    """One line per import of a private module or name by a module it does not belong to."""
    problems: list[str] = []
    for imp in graph.imports:
        parts = imp.target.split(".")
        for i in range(1, len(parts)):
            if _private(parts[i]):
                owner = ".".join(parts[:i])  # the package holding the private module
                line = (
                    f"{imp.where}: {imp.importer} imports {imp.target}, a private module of {owner}"
                )
                if owner not in _ancestors(imp.importer) and line not in problems:
                    problems.append(line)  # once per statement, not once per name
                break
        if imp.name is None or not _private(imp.name):
            continue
        owner, shared = _name_owner(graph, imp.target)
        if not (imp.importer == owner or (shared and owner in _ancestors(imp.importer))):
            problems.append(
                f"{imp.where}: {imp.importer} imports {imp.name} from {imp.target}, a private "
                f"name of {owner}"
            )
    return problems


def cycles(graph: ImportGraph) -> list[str]:
    """One report per strongly connected group of modules: its members, one cycle through
    them, and every import inside the group (each must go for the group to break up)."""
    edges = graph.edges()
    reports = []
    for group in _strongly_connected(list(graph.files), edges):
        if len(group) == 1:
            (only,) = group
            if only not in edges.get(only, {}):
                continue
        members = sorted(group)
        loop = _shortest_cycle(members[0], set(group), edges)
        steps = " -> ".join(f"{a} ({edges[a][b].where})" for a, b in itertools.pairwise(loop))
        inside = [
            f"    {a} -> {b}  ({imp.where})"
            for a in members
            for b, imp in sorted(edges.get(a, {}).items())
            if b in group
        ]
        reports.append(
            f"import cycle among {', '.join(members)}:\n  {steps} -> {loop[-1]}\n"
            "  imports inside the cycle:\n" + "\n".join(inside)
        )
    return reports


def _strongly_connected(nodes: list[str], edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep import chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def _shortest_cycle(start: str, group: set[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """``[start, ..., start]``: a shortest path back to ``start`` inside ``group``."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, {})):
                if child not in group:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")  # callers pass a cyclic group


#: What the serving side (HTTP server, queue worker and client, runtime) may never import,
#: even in a function: the heavy training libraries.
TRAINING_LIBRARIES = ("torch", "torchvision", "transformers", "peft")
SERVING_SIDE = (
    "tuneserve.runtime",
    "tuneserve.serving",
    "tuneserve.queueing",
    "tuneserve.client",
    "tuneserve.cli.serve",
    "tuneserve.cli.worker",
)


def reachable(graph: ImportGraph, starts: list[str]) -> dict[str, str | None]:
    """Every module an import from ``starts`` can run, at any depth: ``{module: the module
    that imports it}`` (``None`` for a start)."""
    edges = graph.edges()
    via: dict[str, str | None] = dict.fromkeys(starts)
    stack = list(starts)
    while stack:
        module = stack.pop()
        for target in edges.get(module, {}):
            if target not in via:
                via[target] = module
                stack.append(target)
    return via


def third_party_imports(path: Path, names: tuple[str, ...]) -> list[int]:
    """Lines of ``path`` that import one of ``names`` (any depth, function bodies too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for stmt in _statements([tree]):
        if isinstance(stmt, ast.Import):
            modules = [alias.name for alias in stmt.names]
        else:
            modules = [stmt.module or ""] if not stmt.level else []
        if any(m.split(".")[0] in names for m in modules):
            lines.append(stmt.lineno)
    return lines


def test_the_serving_side_never_imports_the_training_libraries():
    """The server, the queue worker and its client run packages with ONNX Runtime: no path of
    imports from them (function-level ones included) reaches torch or its kin."""
    graph = scan(SRC, ROOT)
    assert third_party_imports(graph.files["tuneserve.backbones.text"], ("torch",))  # it sees
    starts = [m for m in graph.files if m.startswith(SERVING_SIDE)]
    assert "tuneserve.queueing.worker" in starts and "tuneserve.client" in starts
    via = reachable(graph, starts)
    found = []
    for module in sorted(via):
        for line in third_party_imports(graph.files[module], TRAINING_LIBRARIES):
            chain, at = [module], via[module]
            while at is not None:
                chain.append(at)
                at = via[at]
            found.append(f"{graph.files[module]}:{line} imported via {' <- '.join(chain)}")
    assert not found, "\n".join(found)


def test_no_import_cycles():
    found = cycles(scan(SRC, ROOT))
    assert not found, "\n\n".join(found)


def test_no_private_imports_across_packages():
    found = private_imports(scan(SRC, ROOT))
    assert not found, "\n".join(found)


def _tree(tmp_path: Path, files: dict[str, str]) -> ImportGraph:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return scan(tmp_path, "pkg")


def test_the_checks_find_what_they_look_for(tmp_path):
    graph = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from ._version import v\nfrom .a import A\n",
            "pkg/_version.py": "v = 1\n",
            "pkg/a.py": "from pkg.b import B\nfrom . import sub\nA = 1\n",
            "pkg/b.py": "B = 1\ndef later():\n    from .a import A  # hidden in a function\n",
            "pkg/sub/__init__.py": "from ._impl import x\nfrom pkg.sub.c import y\n",
            "pkg/sub/_impl.py": "x = 1\n_hidden = 2\n",
            "pkg/sub/c.py": "from ._impl import _hidden\nfrom pkg import _version\ny = 1\n",
            "pkg/d.py": (
                "from typing import TYPE_CHECKING\n"
                "from pkg.sub._impl import x\n"
                "from pkg.sub import _private_name\n"
                "from pkg.e import _helper\n"
                "if TYPE_CHECKING:\n    from pkg.sub._impl import Typed\n"
            ),
            "pkg/e.py": "_helper = 1\n",
            "pkg/f.py": "from pkg.g.h import z\n",  # runs pkg.g's __init__ first
            "pkg/g/__init__.py": "from pkg.f import nothing\n",
            "pkg/g/h.py": "z = 1\n",
            "pkg/own/__init__.py": "from .m import M\nHELPER = 1\n",
            "pkg/own/m.py": "from pkg.own import HELPER\nM = 1\n",  # its own __init__'s name
        },
    )
    found = cycles(graph)
    text = "\n".join(found)
    assert len(found) == 3, text
    assert "import cycle among pkg.a, pkg.b:" in text
    assert "pkg.b -> pkg.a  (pkg/b.py:3)" in text  # the import inside a function
    assert "import cycle among pkg.f, pkg.g:" in text  # through a package __init__
    assert "import cycle among pkg.own, pkg.own.m:" in text
    assert "pkg.sub" not in text and "among pkg, " not in text  # re-exports are no cycle

    private = private_imports(graph)
    assert private == [
        "pkg/d.py:2: pkg.d imports pkg.sub._impl, a private module of pkg.sub",
        "pkg/d.py:3: pkg.d imports _private_name from pkg.sub, a private name of pkg.sub",
        "pkg/d.py:4: pkg.d imports _helper from pkg.e, a private name of pkg.e",
    ]  # pkg._version, a sibling's _hidden and the TYPE_CHECKING import are allowed
