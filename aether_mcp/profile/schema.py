"""What a profile may hold: Aether's ``model-profiles.yaml`` sections, and the rules for names in them.

The schema is Aether's own (1.0, and the later ``model_slots`` form). Known
sections are validated strictly so a misspelt key is reported instead of
silently ignored; unknown top-level sections are kept as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..errors import InvalidModelError, UnknownCasteError
from .names import CASTE_NAME, MAX_MODEL_NAME, MODEL_NAME, caste_key


class _Section(BaseModel):
    """A known section: unknown keys are typos, and typos are errors."""

    # defer_build: validators are built when a profile is first read, not while the server starts.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ModelMetadata(_Section):
    provider: str | None = None
    context_window: int | None = None
    # US dollars per million tokens: what a worker's requests cost when the proxy does not say.
    input_cost_per_mtok: float | None = Field(default=None, ge=0)
    output_cost_per_mtok: float | None = Field(default=None, ge=0)
    cache_read_cost_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_cost_per_mtok: float | None = Field(default=None, ge=0)
    speed: str | None = None
    cost_tier: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    best_for: list[str] = Field(default_factory=list)
    description: str | None = None


class ComplexityIndicator(_Section):
    keywords: list[str]
    model: str


class TaskRouting(_Section):
    default_model: str | None = None
    complexity_indicators: dict[str, ComplexityIndicator] = Field(default_factory=dict)


class ProxySettings(_Section):
    endpoint: str
    auth_token: SecretStr | None = None
    health_check: str | None = None


class CasteSettings(_Section):
    """How a caste's workers run. Unset fields fall back to the defaults, then to the shipped settings."""

    permission_mode: Literal["default", "acceptEdits", "dontAsk", "plan", "bypassPermissions"] | None = None
    allowed_tools: list[str] | None = None
    disallowed_tools: list[str] | None = None
    max_turns: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    max_budget_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)
    fallback_models: list[str] | None = None
    role: str | None = None
    mcp_servers: dict[str, dict[str, Any]] | None = None
    endpoint: str | None = None
    auth_token: SecretStr | None = None
    isolation: Literal["none", "worktree"] | None = None
    runs_on: Literal["local", "ray"] | None = None

    @field_validator("fallback_models", mode="after")
    @classmethod
    def _model_names(cls, value: list[str] | None) -> list[str] | None:
        for model in value or []:
            if len(model) > MAX_MODEL_NAME or not MODEL_NAME.fullmatch(model):
                raise ValueError(f"{model!r} is not a model name (letters, digits and . _ : / @ + -)")
        return value


class RaySection(_Section):
    """The Ray cluster that workers with `runs_on: ray` run on."""

    address: str = Field(min_length=1, max_length=300)  # the head's host:port, or "auto"
    # The address of this machine that the cluster's nodes reach the gateway at. Default: the one this machine
    # reaches the cluster from.
    gateway_host: str | None = Field(default=None, max_length=253)
    claude_cli: str = Field(default="claude", min_length=1, max_length=4096)  # the CLI on the nodes
    num_cpus: float = Field(default=1.0, gt=0, le=64)  # what one worker takes of its node


class WorkersSection(_Section):
    """aether-mcp's own section: how workers are started."""

    claude_cli: str | None = None
    max_concurrent_workers: int = Field(default=4, ge=1, le=64)
    max_queued_workers: int = Field(default=64, ge=0, le=1024)
    env_passthrough: list[str] = Field(default_factory=list)
    allowed_dirs: list[str] = Field(default_factory=list)
    max_retries: int = Field(default=2, ge=0, le=10)
    api_timeout_ms: int = Field(default=120_000, ge=1000)
    warm_workers: dict[str, Annotated[int, Field(ge=0, le=8)]] = Field(default_factory=dict)
    warm_idle_s: float = Field(default=300.0, gt=0)
    ray: RaySection | None = None
    defaults: CasteSettings = Field(default_factory=CasteSettings)
    castes: dict[str, CasteSettings] = Field(default_factory=dict)

    @field_validator("castes", "warm_workers", mode="after")
    @classmethod
    def _caste_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _plain_caste_names(value)


class Profile(BaseModel):
    """A parsed profile. Unknown top-level sections are allowed and ignored."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    version: str | None = None
    profile: str | None = None
    worker_models: dict[str, str | None] = Field(default_factory=dict)
    model_slots: dict[str, str | None] | None = None
    model_metadata: dict[str, ModelMetadata] | None = None
    task_routing: TaskRouting | None = None
    user_overrides: dict[str, str] | None = None
    proxy: ProxySettings | None = None
    workers: WorkersSection = Field(default_factory=WorkersSection)

    @field_validator("worker_models", "user_overrides", mode="after")
    @classmethod
    def _caste_names(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _plain_caste_names(value)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 1.0` (unquoted) is a float in YAML; Aether writes '1.0'.
        return str(value) if isinstance(value, int | float) else value

    def castes(self) -> list[str]:
        """Every caste the profile defines, in file order."""
        names = list(self.worker_models)
        names += [c for c in self.user_overrides or {} if c not in self.worker_models]
        return names

    def find_caste(self, name: str) -> str:
        """The caste's name as the file spells it; `route-setter` finds `route_setter`."""
        wanted = caste_key(name)
        for caste in self.castes():
            if caste_key(caste) == wanted:
                return caste
        raise UnknownCasteError(f"Unknown caste '{name}'. Known castes: {', '.join(self.castes()) or '(none)'}.")


def _plain_caste_names(castes: dict[str, Any]) -> dict[str, Any]:
    """A caste's name becomes a worker id, a file name and a branch name: letters, digits, '-' and '_' only."""
    for name in castes:
        if not CASTE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a caste name: start with a letter, then letters, digits, '-' or '_'")
    return castes


def check_model_name(model: str) -> str:
    """Refuse names that could not be stored or passed on as one safe token."""
    if len(model) > MAX_MODEL_NAME:
        raise InvalidModelError(f"Invalid model name: {len(model)} characters, at most {MAX_MODEL_NAME} allowed.")
    if not MODEL_NAME.fullmatch(model):
        raise InvalidModelError(
            f"Invalid model name {model!r}: use the name the proxy knows: letters, digits and . _ : / @ + -, "
            "starting with a letter or digit."
        )
    return model


def check_new_caste_name(caste: str) -> str:
    """A caste created by `set --create` must be a plain name: it becomes a YAML key and a log field."""
    if not CASTE_NAME.fullmatch(caste):
        raise UnknownCasteError(
            f"Invalid caste name {caste!r}: start with a letter, then letters, digits, '-' or '_' (at most 64)."
        )
    return caste
