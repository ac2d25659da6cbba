"""What an install puts on a machine, how its modules may import each other, and which Claude Code the tests run
against."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from helpers import ROOT
from setuptools import find_packages

from aether_mcp.workers.claude_cli import ClaudeCli, _bundled_cli

# The CLI bundled in the claude-agent-sdk release that pyproject.toml pins for the tests.
PINNED_CLAUDE_CODE = "2.1.332"
# How high each part of aether_mcp sits: a module imports from its own floor or below, never from above. The
# top-level modules (errors, atomic, procs, ...) are floor 0; `__main__`, the program, sits on top.
FLOORS = {"profile": 1, "workers": 2, "session": 3, "testing": 3, "commands": 4, "adapters": 5, "__main__": 6}


def test_an_install_carries_aether_mcp_and_its_subpackages_only() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    installed = set(find_packages(where=str(ROOT), include=config["include"]))
    assert installed == {
        "aether_mcp",
        "aether_mcp.adapters",
        "aether_mcp.adapters.top",
        "aether_mcp.commands",
        "aether_mcp.profile",
        "aether_mcp.session",
        "aether_mcp.testing",
        "aether_mcp.workers",
    }  # no top-level bench, no tests


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    """The core (the top-level modules, profile/, workers/) imports no command and no way in, and the commands
    import no way in: what a command shares with a way in lives a floor down."""
    graph = _imports()
    upward = [
        f"{name} -> {target}" for name, targets in graph.items() for target in targets if _floor(target) > _floor(name)
    ]
    assert sorted(upward) == []


def test_no_modules_import_each_other_in_a_cycle() -> None:
    left = _imports()
    while done := {name for name, targets in left.items() if not targets}:  # peel what imports nothing left
        left = {name: targets - done for name, targets in left.items() if name not in done}
    assert left == {}  # what is left is in a cycle, or imports one


def _floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports() -> dict[str, set[str]]:
    """Each module of aether_mcp -> the modules of aether_mcp it imports anywhere: at its top, in a function, or
    for the type checker only."""
    files = {}
    for path in (ROOT / "aether_mcp").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                source = ".".join([*base, *([node.module] if node.module else [])])
                found |= {
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in files else source for alias in node.names
                }
        graph[name] = {target for target in found if target in files and target != name}
    return graph


def test_the_tests_run_the_pinned_claude_code() -> None:
    bundled = _bundled_cli()
    assert bundled is not None, "the dev extra installs claude-agent-sdk, which bundles the CLI"
    version = ClaudeCli(bundled, "claude-agent-sdk bundle").version()
    assert version is not None and version.split()[0] == PINNED_CLAUDE_CODE


def test_the_node_side_of_a_remote_worker_needs_the_standard_library_only() -> None:
    """Ray carries node.py and groups.py to a node by value: a node has Ray and the CLI, not aether-mcp."""
    for name in ("node", "groups"):
        tree = ast.parse((ROOT / "aether_mcp" / "workers" / f"{name}.py").read_text())
        found = set()
        for item in ast.walk(tree):
            if isinstance(item, ast.Import):
                found |= {alias.name.split(".")[0] for alias in item.names}
            elif isinstance(item, ast.ImportFrom):
                found.add("." * item.level + (item.module or "").split(".")[0])
        assert found - {".groups", "__future__", "ray"} <= set(sys.stdlib_module_names), (name, found)


def test_a_server_without_a_cluster_never_loads_ray() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom aether_mcp.adapters.server import build_server\nfrom aether_mcp.workers import colony, "
            "remote\nfrom aether_mcp.commands import doctor\nprint('ray' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
