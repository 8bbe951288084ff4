"""The shape of ``helpers/``: no import circles, and a README that names every module.

An import circle (``device`` imports ``model``, which imports ``device``) works only while one
side imports inside a function, and breaks as soon as someone moves that import to the top.
It also means a function sits in the wrong module. The graph below is read from the source
with ``ast``, not by importing, so it sees every import: at the top of a module and inside
functions, ``import helpers.x``, ``from helpers import x``, ``from helpers.x import y``,
relative ``from . import x`` and ``importlib.import_module("helpers.x")``.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections import deque
from pathlib import Path

import pytest

from helpers import config

HELPERS = config.REPO_ROOT / "helpers"
README = config.REPO_ROOT / "README.md"


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package in ``package_dir``, by dotted name ("helpers.report.build")."""
    found = {}
    for path in sorted(Path(package_dir).rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` loads: itself, else its longest prefix that is a module; None for a
    name outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a relative import ``from <level dots><name> import ...`` in ``module``."""
    base = module.split(".")
    base = base if is_package else base[:-1]  # a package's "." is itself, a module's its package
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str, int]]:
    """(dotted name, what it is part of, line) of everything a module's code imports, anywhere.

    ``from a.b import c`` yields ("a.b.c", "a.b"): c is the submodule a.b.c where that exists,
    else a name in a.b. ``import a.b`` yields ("a.b", "a.b"). ``import_module`` and
    ``__import__`` count when their first argument is a literal.
    """
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = _absolute(module, is_package, node.level, node.module)
            names += [(f"{source}.{alias.name}", source, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            target = node.args[0].value
            if called not in ("import_module", "__import__") or not isinstance(target, str):
                continue
            anchor = node.args[1] if len(node.args) > 1 else None
            if target.startswith(".") and isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
                dots = len(target) - len(target.lstrip("."))
                target = _absolute(anchor.value, True, dots, target.lstrip(".") or None)
            names.append((target, target, node.lineno))
    return names


def import_graph(package_dir: Path, package: str) -> dict[str, dict[str, int]]:
    """{module: {module it imports: the first line that does it}}, within the package only.

    ``from helpers import x`` is an edge to ``helpers.x`` where that module exists, else to
    ``helpers`` (the package's ``__init__``). Python runs a package's ``__init__`` before any
    of its submodules; that implicit step is not an edge, or every package whose ``__init__``
    gathers its submodules would count as a circle.
    """
    modules = module_files(package_dir, package)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for name, part_of, line in _imported_names(tree, module, path.name == "__init__.py"):
            target = name if name in modules else _resolve(part_of, modules)
            if target and target != module:
                edges[target] = min(line, edges.get(target, line))
        graph[module] = dict(sorted(edges.items()))
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest circle [a, b, ..., a] through each group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(start: str) -> None:  # Tarjan's strongly connected components, without recursion
        work = [(start, iter(graph.get(start, {})))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.get(target, {}))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)

    cycles = []
    for group in groups:
        start = min(group)
        # breadth-first from start back to start, inside the group: the shortest circle through it
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if start in graph.get(node, {}) and (node != start or not came_from):
                path = [start]
                while node != start:
                    path.append(node)
                    node = came_from[node]
                cycles.append([start, *reversed(path[1:]), start])
                break
            for target in graph.get(node, {}):
                if target in group and target not in came_from and target != start:
                    came_from[target] = node
                    queue.append(target)
    return sorted(cycles)


def cycle_report(package_dir: Path, package: str) -> list[str]:
    """Each circle as 'a -> b (a.py line 3) -> a (b.py line 7)': every step with the file and
    line that imports."""
    graph = import_graph(package_dir, package)
    files = module_files(package_dir, package)
    lines = []
    for cycle in import_cycles(graph):
        steps = [cycle[0]]
        for here, there in zip(cycle, cycle[1:], strict=False):
            where = files[here].relative_to(Path(package_dir).parent).as_posix()
            steps.append(f"{there} ({where} line {graph[here][there]})")
        lines.append(" -> ".join(steps))
    return lines


def test_no_module_of_helpers_imports_one_that_imports_it_back():
    circles = cycle_report(HELPERS, "helpers")
    assert circles == [], (
        "Import circles in helpers/ (move the function to the module its name points to, "
        "so that the imports go one way):\n" + "\n".join(circles)
    )


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def test_a_circle_closed_inside_a_function_is_found_and_named(tmp_path):
    package = write_package(
        tmp_path / "tiny",
        {
            "__init__.py": "",
            "a.py": "from tiny import b\n",
            "b.py": "import os\n\n\ndef late():\n    from tiny.c import thing\n    return thing\n",
            "c.py": "thing = 1\n\n\ndef later():\n    import tiny.a\n",
            "alone.py": "from tiny import a, b\n",
        },
    )
    assert import_graph(package, "tiny")["tiny.b"] == {"tiny.c": 5}
    assert cycle_report(package, "tiny") == [
        "tiny.a -> tiny.b (tiny/a.py line 1) -> tiny.c (tiny/b.py line 5) -> tiny.a (tiny/c.py line 5)"
    ]


@pytest.mark.parametrize(
    "importer",
    [
        "from . import a",
        "from .a import name",
        "from ..tiny import a",
        "import tiny.a as renamed",
        "import importlib\nimportlib.import_module('tiny.a')",
        "from importlib import import_module\nimport_module('.a', 'tiny')",
        "def deep():\n    class Inner:\n        def method(self):\n            from tiny.a import name",
    ],
)
def test_every_way_of_importing_makes_an_edge(tmp_path, importer):
    files = {"__init__.py": "", "a.py": "from tiny import b\nname = 1\n", "b.py": importer + "\n"}
    package = write_package(tmp_path / "tiny", files)
    assert import_graph(package, "tiny")["tiny.b"] == {"tiny.a": importer.count("\n") + 1}
    assert cycle_report(package, "tiny")[0].startswith("tiny.a -> tiny.b (tiny/a.py line 1) -> tiny.a")


def test_a_subpackage_gathering_its_modules_is_no_circle_but_a_real_one_inside_it_is(tmp_path):
    package = write_package(
        tmp_path / "tiny",
        {
            "__init__.py": "",
            "outside.py": "import json\n",
            "sub/__init__.py": "from tiny.sub.one import x\nfrom tiny.sub.two import y\n",
            "sub/one.py": "from tiny import outside\nfrom tiny.sub import two\nx = 1\n",
            "sub/two.py": "y = 2\n",
        },
    )
    graph = import_graph(package, "tiny")
    assert graph["tiny.sub"] == {"tiny.sub.one": 1, "tiny.sub.two": 2}
    assert graph["tiny.sub.one"] == {"tiny.outside": 1, "tiny.sub.two": 2}
    assert cycle_report(package, "tiny") == []
    (package / "sub" / "two.py").write_text("def f():\n    from tiny.sub import x\n")  # the __init__'s name
    assert cycle_report(package, "tiny") == [
        "tiny.sub -> tiny.sub.two (tiny/sub/__init__.py line 2) -> tiny.sub (tiny/sub/two.py line 2)"
    ]


# ---- the README's module map ----
# A line of the map: "- `helpers/x.py`: what it does" (a package: `helpers/report/`, then its modules).
_MAP_ENTRY = re.compile(r"^\s*- `helpers/([\w/]+(?:\.py|/))`", re.MULTILINE)


def readme_module_map(text: str) -> list[str]:
    """The paths the README's module map names, relative to helpers/ ("geo.py", "report/build.py")."""
    start = text.index("### The modules of `helpers/`")
    end = text.find("\n## ", start)
    return _MAP_ENTRY.findall(text[start : end if end != -1 else len(text)])


def test_the_readme_names_every_module_of_helpers_and_only_those():
    named = readme_module_map(README.read_text(encoding="utf-8"))
    assert len(named) == len(set(named)), f"named twice: {sorted({n for n in named if named.count(n) > 1})}"
    files = {
        path.relative_to(HELPERS).as_posix()
        for path in HELPERS.rglob("*.py")
        if "__pycache__" not in path.parts and path.name not in ("__init__.py", "__main__.py")
    }
    packages = {path.parent.relative_to(HELPERS).as_posix() + "/" for path in HELPERS.rglob("*/__init__.py")}
    missing = sorted((files | packages) - set(named))
    assert not missing, f"README.md's module map lacks a line for helpers/{', helpers/'.join(missing)}"
    gone = sorted(set(named) - files - packages)
    assert not gone, f"README.md's module map names helpers/{', helpers/'.join(gone)}, which does not exist"


def test_the_module_map_reader_stops_at_the_next_section():
    text = "### The modules of `helpers/`\n\n- `helpers/geo.py`: distances\n- `helpers/report/`: the report\n"
    after = "\n## Next\n- `helpers/later.py`: not in the map\n"
    assert readme_module_map(text + after) == ["geo.py", "report/"]
