"""`aether-mcp top`: the project's workers, live, in the terminal. The one package that imports Textual."""

from __future__ import annotations

from pathlib import Path

from .app import ColonyApp

__all__ = ["ColonyApp", "run"]


def run(state_dir: Path, project: Path) -> int:
    """Run the view until `q`; its exit status."""
    status = ColonyApp(state_dir, project).run()
    return status if isinstance(status, int) else 0
