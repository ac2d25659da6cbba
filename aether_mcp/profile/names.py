"""The rules for caste and model names, in one place for every module (no pydantic: the hook uses them)."""

from __future__ import annotations

import re

# Claude Code's own model aliases: the names model_slots maps.
SLOT_NAMES = ("opus", "sonnet", "haiku", "inherit")
MAX_MODEL_NAME = 200
# A model name travels into a command-line argument, an environment variable,
# a YAML file and the proxy's routing table: letters, digits and the few marks
# provider names use (anthropic/claude-sonnet-4-5, gpt-4o:latest,
# claude-3-5-sonnet@20240620), starting with a letter or digit. Nothing a shell,
# YAML or a terminal would read as syntax.
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*"
MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
# A caste's name becomes a worker id, a file name and a branch name.
CASTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# A worker's id: its caste's name in lower case with '-' for '_', and eight hex digits. It names files (notes,
# details, transcripts) and a branch, so one read back from a file is used only when it has this form.
WORKER_ID = re.compile(r"[a-z][a-z0-9-]{0,63}-[0-9a-f]{8}")


def is_worker_id(text: object) -> bool:
    """Whether `text` is a worker id: a plain name, never a path."""
    return isinstance(text, str) and WORKER_ID.fullmatch(text) is not None


def caste_key(name: str) -> str:
    """The form every spelling of one caste shares: `aether-builder`, `Builder` and `builder` are one caste;
    so are `surveyor_nest` and `aether-surveyor-nest`, and `prime` and `queen` (Aether renamed it)."""
    key = name.strip().lower().replace("-", "_")
    key = key.removeprefix("aether_") or key
    return "queen" if key == "prime" else key


def caste_name(agent_name: str) -> str:
    """The caste an agent is, for one the profile does not name: `aether-surveyor-nest` is `surveyor-nest`."""
    prefix = len("aether-")
    if agent_name.lower().startswith(("aether-", "aether_")) and len(agent_name) > prefix:
        return agent_name[prefix:]
    return agent_name
