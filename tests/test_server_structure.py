"""The server's boundaries, checked on its source (``ast``, nothing imported): it uses only
the library's public API, it never writes the process environment (settings are read once
and passed down; only child job processes get environment variables), and its three parts
layer: ``server.http`` and ``server.runner`` use ``server.storage``, never each other, and
``server.storage`` uses neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[1] / "server"
SOURCES = sorted(SERVER.rglob("*.py"))
# what the server may import from the library: public modules only
PUBLIC = {"boltzgen", "boltzgen.jobs", "boltzgen.schemas", "boltzgen.errors", "boltzgen.systems"}
# server part -> the server parts it must not import
FORBIDDEN = {
    "http": {"runner"},
    "runner": {"http"},
    "storage": {"http", "runner"},
    "web": {"runner"},  # the pages call the REST routes and the store, never the workers
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def library_imports(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every import from ``boltzgen`` (name None: ``import mod``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [
                (node.lineno, a.name, None)
                for a in node.names
                if a.name == "boltzgen" or a.name.startswith("boltzgen.")
            ]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module == "boltzgen" or (node.module or "").startswith("boltzgen."))
        ):
            out += [(node.lineno, node.module, a.name) for a in node.names]
    return out


def environ_writes(tree: ast.AST) -> list[int]:
    """Lines that assign to, delete from or mutate ``os.environ`` (or call putenv/unsetenv)."""

    def is_environ(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ) or (isinstance(node, ast.Name) and node.id == "environ")

    lines = []
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if isinstance(t, ast.Subscript) and is_environ(t.value) or is_environ(t):
                lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            mutators = {"setdefault", "update", "pop", "popitem", "clear", "__setitem__"}
            if f.attr in mutators and is_environ(f.value):
                lines.append(node.lineno)
            if f.attr in {"putenv", "unsetenv"} and isinstance(f.value, ast.Name):
                lines.append(node.lineno)
    return sorted(lines)


def test_sources_found():
    names = {p.relative_to(SERVER).as_posix() for p in SOURCES}
    assert {
        "app.py",
        "settings.py",
        "storage/queue.py",
        "storage/store.py",
        "http/deps.py",
        "http/routes/jobs.py",
        "runner/worker.py",
    } <= names


def server_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of a ``server`` module (function level too)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("server.")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("server.")
        ):
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(SERVER).as_posix())
def test_server_parts_layer(path):
    part = path.relative_to(SERVER).parts[0]
    banned = FORBIDDEN.get(part, set())
    bad = [
        f"{line}: {module}"
        for line, module in server_imports(ast.parse(path.read_text()))
        if module.split(".")[1] in banned
    ]
    assert not bad, f"server/{part} must not import server.{sorted(banned)}: {bad}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(SERVER).as_posix())
def test_server_uses_only_public_library_names(path):
    bad = []
    for line, module, name in library_imports(ast.parse(path.read_text())):
        if any(_private(part) for part in module.split(".")) or module not in PUBLIC:
            bad.append(f"{line}: module {module}")
        if name is not None and _private(name):
            bad.append(f"{line}: {module}.{name}")
    assert not bad, f"{path.name} imports non-public library names: {bad}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(SERVER).as_posix())
def test_server_never_writes_the_environment(path):
    assert environ_writes(ast.parse(path.read_text())) == [], path.name


def test_the_checks_catch_what_they_look_for():
    bad = ast.parse(
        "import os\nfrom boltzgen.jobs import _ProgressWriter\nimport boltzgen._energy_worker\n"
        "from boltzgen.generator.pipeline import x\n"
        "os.environ['A'] = '1'\nos.environ.setdefault('B', '2')\ndel os.environ['A']\n"
        "os.environ.update(C='3')\nos.putenv('D', '4')\n"
        "env = dict(os.environ)\nenv.update(E='5')\nenv['F'] = '6'\n"
    )
    found = library_imports(bad)
    assert [(m, n) for _, m, n in found] == [
        ("boltzgen.jobs", "_ProgressWriter"),
        ("boltzgen._energy_worker", None),
        ("boltzgen.generator.pipeline", "x"),
    ]
    assert environ_writes(bad) == [5, 6, 7, 8, 9]  # a copy of the environment is fine
    layered = ast.parse("import server.http.auth\nfrom server.runner.worker import W\nimport os\n")
    assert server_imports(layered) == [(1, "server.http.auth"), (2, "server.runner.worker")]
