"""Which model a caste uses, and why: override, its profile entry, its agent's `model:`, task routing, the default."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from .agents import Agent
from .names import caste_key
from .schema import ModelMetadata, Profile

Source = Literal[
    "override", "profile", "slot", "agent", "inherit", "task", "default", "explicit", "cli_default", "asked"
]
INHERIT = "inherit"


class AgentRef(BaseModel):
    """The Claude Code agent a caste runs as."""

    name: str = Field(description="The agent's name, as --agent takes it.")
    path: str = Field(description="The agent file.")


class CasteModel(BaseModel):
    """Which model a caste uses, and why."""

    caste: str = Field(description="The caste's name as the profile spells it.")
    model: str | None = Field(description="The model the caste's workers run on; null means the CLI's own default.")
    source: Source = Field(
        description=(
            "Why this model: override (user_overrides), profile (worker_models), slot (worker_models names a "
            "model_slots entry), agent (the agent file's model: line), inherit (the parent session's model), "
            "task (task_routing keyword match), default (task_routing.default_model), explicit (given for one "
            "worker), cli_default (no model: the Claude Code CLI picks its own), asked (not a caste: the model its "
            "requests asked for, passed on)."
        )
    )
    slot: str | None = Field(default=None, description="The model slot the entry named (opus, sonnet, haiku, inherit).")
    default_model: str | None = Field(default=None, description="The caste's own worker_models entry, as written.")
    override: str | None = Field(default=None, description="The caste's user_overrides entry, if any.")
    metadata: ModelMetadata | None = Field(default=None, description="model_metadata for the model, if any.")
    note: str | None = Field(default=None, description="How an inherit slot or a missing entry was resolved.")
    agent: AgentRef | None = Field(
        default=None, description="The Claude Code agent the caste runs as (its prompt, tools); null: none."
    )


def resolve(
    profile: Profile,
    caste: str,
    task: str | None = None,
    *,
    agent: Agent | None = None,
    parent_model: str | None = None,
) -> CasteModel:
    """The effective model of `caste`: override, its profile entry, its agent's `model:`, task routing, default.

    `caste` is a profile caste, or, with `agent`, the agent's caste. `parent_model` is what `inherit` means:
    the parent session's model, when the server knows it."""
    name = caste if agent is not None else profile.find_caste(caste)
    override = _entry(profile.user_overrides or {}, name)
    entry = _entry(profile.worker_models, name)
    ref = AgentRef(name=agent.name, path=str(agent.path)) if agent is not None else None
    base = CasteModel(caste=name, model=None, source="cli_default", default_model=entry, override=override, agent=ref)

    if override is not None:
        chosen = _through_slot(profile, override, base.model_copy(update={"source": "override"}), parent_model)
    elif entry is not None:
        chosen = _through_slot(profile, entry, base.model_copy(update={"source": "profile"}), parent_model)
    elif agent is not None and agent.model is not None:
        chosen = _through_slot(profile, agent.model, base.model_copy(update={"source": "agent"}), parent_model)
    else:
        chosen = base
    if chosen.model is None and chosen.source != "inherit":
        chosen = _route_task(profile, task, chosen)
    if chosen.model is not None and profile.model_metadata:
        chosen.metadata = profile.model_metadata.get(chosen.model)
    return chosen


def _entry(entries: dict[str, str | None] | dict[str, str], caste: str) -> str | None:
    """The caste's entry however the file spells the caste (`route-setter` for `route_setter`)."""
    key = caste_key(caste)
    return next((value for name, value in entries.items() if caste_key(name) == key), None)


def _through_slot(profile: Profile, name: str, chosen: CasteModel, parent_model: str | None) -> CasteModel:
    """Resolve a model_slots name; `inherit` with no model of its own is the parent's; any other name is a model
    as it stands."""
    slots = profile.model_slots or {}
    target = slots.get(name)
    if name == INHERIT and target is None:
        if parent_model:
            note = "inherit: the parent session's model (ANTHROPIC_MODEL in the server's environment)"
        else:
            note = (
                "inherit: the parent session's model, which the server does not know (no ANTHROPIC_MODEL in its "
                "environment), so the worker uses the Claude Code CLI's own default"
            )
        update = {"model": parent_model or None, "slot": name, "source": "inherit", "note": note}
        return chosen.model_copy(update=update)
    if name not in slots:
        return chosen.model_copy(update={"model": name})
    source: Source = "slot" if chosen.source == "profile" else chosen.source
    return chosen.model_copy(update={"model": target, "slot": name, "source": source})


def _route_task(profile: Profile, task: str | None, chosen: CasteModel) -> CasteModel:
    """No model from the caste itself: route by the task's keywords, then fall back to the default."""
    routing = profile.task_routing
    why = f"slot '{chosen.slot}' is null" if chosen.slot else "the caste has no model of its own"
    if routing is not None and task:
        for name, indicator in routing.complexity_indicators.items():
            hit = next((k for k in indicator.keywords if _mentions(task, k)), None)
            if hit is not None:
                note = f"{why}; the task mentions '{hit}' (task_routing.complexity_indicators.{name})"
                return chosen.model_copy(update={"model": indicator.model, "source": "task", "note": note})
    if routing is not None and routing.default_model:
        note = f"{why}; using task_routing.default_model"
        return chosen.model_copy(update={"model": routing.default_model, "source": "default", "note": note})
    note = f"{why} and there is no task_routing.default_model: the worker uses the Claude Code CLI's own default"
    return chosen.model_copy(update={"model": None, "source": "cli_default", "note": note})


def _mentions(text: str, keyword: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(keyword)}(?!\w)", text, re.IGNORECASE) is not None
