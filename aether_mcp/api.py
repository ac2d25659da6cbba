"""The operations aether-mcp offers, shared by the MCP server and the CLI.

Both front ends call these and only format the results differently, so a
tool and its command can never disagree.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from .profiles import CasteModel, resolve
from .store import ProfileStore


class CasteModels(BaseModel):
    castes: list[CasteModel] = Field(description="One entry per caste asked for, in profile order.")
    path: str = Field(description="The profile file in use.")
    rule: str = Field(description="Which rule chose that file (--profiles, AETHER_MODEL_PROFILES, ...).")
    proxy_endpoint: str | None = Field(
        description="The proxy workers talk to; null when they use the CLI's own backend."
    )


def get_caste_models(store: ProfileStore, caste: str | None = None, task: str | None = None) -> CasteModels:
    profile, where = store.load()
    names = [profile.find_caste(caste)] if caste is not None else profile.castes()
    return CasteModels(
        castes=[resolve(profile, name, task) for name in names],
        path=str(where.path),
        rule=where.rule,
        proxy_endpoint=profile.proxy.endpoint if profile.proxy else None,
    )
