"""Which model a caste uses, and why: override, its own entry, task routing, then the default."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from .schema import ModelMetadata, Profile

Source = Literal["override", "profile", "slot", "task", "default", "explicit", "cli_default"]


class CasteModel(BaseModel):
    """Which model a caste uses, and why."""

    caste: str = Field(description="The caste's name as the profile spells it.")
    model: str | None = Field(description="The model the caste's workers run on; null means the CLI's own default.")
    source: Source = Field(
        description=(
            "Why this model: override (user_overrides), profile (worker_models), slot (worker_models names a "
            "model_slots entry), task (task_routing keyword match), default (task_routing.default_model), "
            "explicit (given for one worker), cli_default (no model: the Claude Code CLI picks its own)."
        )
    )
    slot: str | None = Field(default=None, description="The model slot the entry named (opus, sonnet, haiku, inherit).")
    default_model: str | None = Field(default=None, description="The caste's own worker_models entry, as written.")
    override: str | None = Field(default=None, description="The caste's user_overrides entry, if any.")
    metadata: ModelMetadata | None = Field(default=None, description="model_metadata for the model, if any.")
    note: str | None = Field(default=None, description="How an inherit slot or a missing entry was resolved.")


def resolve(profile: Profile, caste: str, task: str | None = None) -> CasteModel:
    """The effective model of `caste`: override, then its own entry, then task routing, then the default."""
    name = profile.find_caste(caste)
    override = (profile.user_overrides or {}).get(name)
    entry = profile.worker_models.get(name)
    base = CasteModel(caste=name, model=None, source="cli_default", default_model=entry, override=override)

    if override is not None:
        chosen = _through_slot(profile, override, base.model_copy(update={"source": "override"}))
    elif entry is not None:
        chosen = _through_slot(profile, entry, base.model_copy(update={"source": "profile"}))
    else:
        chosen = base
    if chosen.model is None:
        chosen = _route_task(profile, task, chosen)
    if chosen.model is not None and profile.model_metadata:
        chosen.metadata = profile.model_metadata.get(chosen.model)
    return chosen


def _through_slot(profile: Profile, name: str, chosen: CasteModel) -> CasteModel:
    """Resolve a model_slots name; any other name is a model as it stands."""
    slots = profile.model_slots
    if slots is None or name not in slots:
        return chosen.model_copy(update={"model": name})
    target = slots[name]
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
