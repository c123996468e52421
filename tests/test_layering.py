"""The control plane reaches the daemon through ``control.device.Device`` only (issue 12):
commands, reports and the web view import neither ``daemon/app.py`` nor anything that
imports it, so no import circle runs through the daemon (type-only imports count too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edge_classifier"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere (top level, functions, TYPE_CHECKING)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {dep for dep in found if dep in modules and dep != name}
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """An import path from ``start`` to ``goal``, or None."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop()
        for dep in sorted(graph[path[-1]]):
            if dep == goal:
                return [*path, dep]
            if dep not in seen:
                seen.add(dep)
                paths.append([*path, dep])
    return None


def test_nothing_the_daemon_imports_imports_it_back():
    graph = import_graph()
    app = "edge_classifier.daemon.app"
    assert "edge_classifier.control.commands" in graph[app]  # the check below has something to check
    circles = {dep: path for dep in graph[app] if (path := reaches(graph, dep, app)) is not None}
    assert circles == {}, "import circles through daemon/app.py: " + "; ".join(
        " -> ".join(path) for path in circles.values())


def test_the_control_plane_loads_without_the_daemon():
    code = ("import sys\n"
            "import edge_classifier.control.commands, edge_classifier.control.device\n"
            "import edge_classifier.daemon.report, edge_classifier.web.port\n"
            "print(sorted(m for m in sys.modules if m.startswith('edge_classifier.daemon.app')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
