"""The allowed imports between the parts (docs/ARCHITECTURE.md), checked on the source.

A new import that crosses a layer the wrong way (flows importing physics, the library importing
the server, a cycle in the jobs package) fails here, with the offending module named.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# what the workflows over the library (pipeline, jobs) may use
_WORKFLOW = {
    "analysis",
    "cores",
    "cv",
    "energy",
    "enhanced",
    "errors",
    "generator",
    "metadynamics",
    "md",
    "plots",
    "refinement",
    "samples",
    "simulation",
    "systems",
}

# part -> the parts it may import (besides itself); a part is boltzgen.<first name>
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "paths": set(),
    "cores": {"errors"},
    "processes": set(),
    "constants": set(),
    "jsonable": set(),
    "flows": {"errors"},  # flows know no physics
    "analysis": {"errors"},
    "samples": {"analysis", "errors", "h5io"},
    "h5io": {"errors", "systems"},
    "diagnostics": {"analysis", "errors"},  # arrays in, verdicts out (numpy, scipy, arviz-stats)
    "plots": {"errors"},
    "systems": {"errors", "paths"},
    "openmm_context": {"errors", "systems"},
    "energy_worker": {"errors", "openmm_context", "processes", "systems"},
    "energy": {"errors", "openmm_context", "energy_worker", "processes", "systems"},
    "simulation": {"errors", "h5io", "openmm_context", "systems"},
    "md": {"errors", "h5io", "simulation", "systems"},
    "coordinates": {"errors"},
    "cv": {"coordinates", "errors", "systems"},
    "umbrella": {"analysis", "cv", "errors", "simulation", "systems"},
    "replica_pool": {"errors", "processes", "simulation", "systems"},
    "remd": {"cores", "errors", "h5io", "replica_pool", "simulation", "systems"},
    "enhanced": {"openmm_context", "remd", "umbrella"},  # re-exports only
    "metadynamics": {"analysis", "cv", "errors", "simulation", "systems"},
    "remd_ladder": {"enhanced", "errors", "simulation"},
    # refinement.planning stratifies by backbone state (cv.backbone_state_labels); it takes the
    # verdict's per-state particle floor, and a cut's jump weights get diagnostics.k_hat
    "refinement": {"analysis", "cv", "diagnostics", "errors", "samples", "energy"},
    "generator": {
        "analysis",
        "coordinates",
        "cv",
        "energy",
        "errors",
        "flows",
        "md",
        "plots",
        "refinement",
        "samples",
        "systems",
    },
    # processes: flows trained side by side (spawn_call), a standard-library leaf
    "pipeline": _WORKFLOW | {"diagnostics", "processes", "remd_ladder"},
    "cg": {
        "analysis",
        "coordinates",
        "cv",
        "errors",
        "flows",
        "generator",
        "md",
        "plots",
        "systems",
    },
    "jobs": _WORKFLOW | {"cg", "pipeline"},
    "schemas": {"errors"},
    "client": {"errors", "schemas"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module_level_only: bool = False) -> set[str]:
    """Absolute names a file imports (``from a.b import c`` gives a.b and a.b.c)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _part(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "boltzgen" and len(parts) > 1 else None


def _library_files() -> list[Path]:
    return sorted((ROOT / "boltzgen").rglob("*.py"))


def test_parts_import_only_what_the_architecture_allows() -> None:
    bad = []
    for path in _library_files():
        own = _part(_module_name(path))
        if own in (None, "cli", "__main__"):
            continue  # the package root re-exports everything; the CLI is a front end
        assert own in ALLOWED, f"{own}: new part, add it to ALLOWED and docs/ARCHITECTURE.md"
        for name in _imports(path):
            other = _part(name)
            if other in (None, own, "__version__", "constants", "jsonable"):
                continue
            if other not in ALLOWED[own]:
                bad.append(f"{_module_name(path)} imports {name}")
    assert not bad, "\n".join(bad)


def test_library_never_imports_the_server() -> None:
    bad = [
        f"{_module_name(p)} imports {n}"
        for p in _library_files()
        if _part(_module_name(p)) != "cli"  # `boltzgen serve` starts it
        for n in _imports(p)
        if n == "server" or n.startswith("server.")
    ]
    assert not bad, "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def _graph(files: list[Path], module_level_only: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in modules.items():
        for name in _imports(path, module_level_only):
            # ``from pkg import sub`` names a module; ``from mod import func`` names mod
            target = name if name in modules else name.rsplit(".", 1)[0]
            if target in modules and target != mod and not mod.startswith(target + "."):
                graph[mod].add(target)
    return graph


def test_no_import_cycles_in_the_jobs_package() -> None:
    """Every import inside boltzgen.jobs (function-level ones too) points one way; the
    registry finds the kinds by listing the package, not by importing them by name."""
    files = sorted((ROOT / "boltzgen" / "jobs").rglob("*.py"))
    graph = _graph(files, module_level_only=False)
    assert _cycle(graph) is None, _cycle(graph)


def test_no_import_cycles_in_the_library() -> None:
    """No cycle anywhere in the library, counting imports inside functions: a deferred import
    hides a cycle from Python's loader, not from a reader."""
    for module_level_only in (True, False):
        graph = _graph(_library_files(), module_level_only=module_level_only)
        assert _cycle(graph) is None, _cycle(graph)


def test_the_cycle_check_sees_a_function_level_cycle(tmp_path: Path) -> None:
    """The checker itself: a cycle closed by an import inside a function is found, and only
    when function-level imports count."""
    pkg = tmp_path / "boltzgen" / "toy"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from boltzgen.toy.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from boltzgen.toy.a import f\n\n    return f\n")
    files = sorted(pkg.glob("*.py"))
    names = {p: ".".join(p.relative_to(tmp_path).with_suffix("").parts) for p in files}
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        assert _cycle(_graph(files, module_level_only=True)) is None
        found = _cycle(_graph(files, module_level_only=False))
    finally:
        ROOT = root
    assert found is not None and set(found) == set(names.values())


def test_import_boltzgen_is_light() -> None:
    """``import boltzgen`` loads neither torch, OpenMM nor mdtraj (they load on first use)."""
    code = (
        "import sys, boltzgen; "
        "print(sorted(m for m in ('torch', 'openmm', 'mdtraj') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_adding_a_job_kind_is_adding_a_module() -> None:
    """Every module under boltzgen/jobs/kinds registers at least one kind, found without being
    named anywhere else."""
    from boltzgen.jobs import job_kinds

    modules = {
        p.stem for p in (ROOT / "boltzgen" / "jobs" / "kinds").glob("*.py") if p.stem[0] != "_"
    }
    registered = {k.run.__module__.rsplit(".", 1)[-1] for k in job_kinds().values()}
    assert modules <= registered, modules - registered
