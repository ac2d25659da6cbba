"""`aether-mcp agents sync`: native mode, where Claude Code's own sub-agents run each caste on its model.

Each project agent file's `model:` line gets the model its caste resolves to
(`inherit` where that is the parent's), and nothing else in the file changes.
Claude Code sends whatever name that line holds, so through one endpoint every
caste asks for its own model; but there is one endpoint and one token for all,
no worker-by-worker proof, and `aether update` rewrites the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic
from ..profile.store import ProfileStore

_FRONTMATTER_END = re.compile(r"^---[ \t]*\r?$", re.MULTILINE)
_MODEL_LINE = re.compile(r"^model:[^\r\n]*", re.MULTILINE)


@dataclass(frozen=True)
class Drift:
    caste: str
    path: str
    written: str | None  # the file's model: line now (None: it has none)
    wanted: str


def drift(store: ProfileStore) -> list[Drift]:
    """The project's agent files whose `model:` line differs from their caste's resolved model."""
    catalog = store.catalog()
    found = []
    for agent in catalog.scan.agents.values():
        if agent.user_level:
            continue  # the user's own agents serve every project: not this project's to rewrite
        caste = catalog.find(agent.name)
        entry = catalog.resolve(caste)
        wanted = "inherit" if entry.source == "inherit" else entry.model
        if wanted is not None and wanted != agent.model:
            found.append(Drift(caste, str(agent.path), agent.model, wanted))
    return found


def sync(store: ProfileStore) -> list[Drift]:
    """Write each drifted agent's model into its `model:` line; return what was changed. Every edit is worked
    out before any file is written, so a file that cannot be edited leaves all of them as they were."""
    changed = drift(store)
    edits = [(Path(i.path), with_model(Path(i.path).read_bytes().decode("utf-8"), i.wanted)) for i in changed]
    for path, text in edits:
        write_atomic(path, text)
    return changed


def with_model(text: str, model: str) -> str:
    """`text` with its frontmatter's `model:` line set to `model`; a line is added at the end if it has none.

    Only files the agent reader parsed come here, so the frontmatter has its closing line."""
    start = text.index("\n") + 1  # past the opening ---
    end_match = _FRONTMATTER_END.search(text, start)
    assert end_match is not None
    end = end_match.start()
    line = _MODEL_LINE.search(text, start, end)
    if line is not None:
        return text[: line.start()] + f"model: {model}" + text[line.end() :]
    newline = "\r\n" if "\r\n" in text[:end] else "\n"
    return text[:end] + f"model: {model}{newline}" + text[end:]
