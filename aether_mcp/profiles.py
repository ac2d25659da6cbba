"""The profile model: parse, validate, and resolve a caste's model.

The schema is Aether's own ``model-profiles.yaml`` (1.0, and the later
``model_slots`` form). Known sections are validated strictly so a misspelt
key is reported instead of silently ignored; unknown top-level sections are
kept as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import InvalidModelError, ProfileError, UnknownCasteError

if TYPE_CHECKING:
    import yaml

# Claude Code's own model aliases: the names model_slots maps.
SLOT_NAMES = ("opus", "sonnet", "haiku", "inherit")
MAX_MODEL_NAME = 200
# A model name travels into a command-line argument, an environment variable,
# a YAML file and the proxy's routing table: letters, digits and the few marks
# provider names use (anthropic/claude-sonnet-4-5, gpt-4o:latest,
# claude-3-5-sonnet@20240620), starting with a letter or digit. Nothing a shell,
# YAML or a terminal would read as syntax.
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_CASTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

Source = Literal["override", "profile", "slot", "task", "default", "explicit", "cli_default"]


class _Section(BaseModel):
    """A known section: unknown keys are typos, and typos are errors."""

    # defer_build: validators are built when a profile is first read, not while the server starts.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ModelMetadata(_Section):
    provider: str | None = None
    context_window: int | None = None
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
    role: str | None = None
    mcp_servers: dict[str, dict[str, Any]] | None = None
    endpoint: str | None = None
    auth_token: SecretStr | None = None


class WorkersSection(_Section):
    """aether-mcp's own section: how workers are started."""

    claude_cli: str | None = None
    max_concurrent_workers: int = Field(default=4, ge=1, le=64)
    env_passthrough: list[str] = Field(default_factory=list)
    max_retries: int = Field(default=2, ge=0, le=10)
    api_timeout_ms: int = Field(default=120_000, ge=1000)
    warm_workers: dict[str, Annotated[int, Field(ge=0, le=4)]] = Field(default_factory=dict)
    warm_idle_s: float = Field(default=300.0, gt=0)
    defaults: CasteSettings = Field(default_factory=CasteSettings)
    castes: dict[str, CasteSettings] = Field(default_factory=dict)


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
        wanted = normalize_caste(name)
        for caste in self.castes():
            if normalize_caste(caste) == wanted:
                return caste
        raise UnknownCasteError(f"Unknown caste '{name}'. Known castes: {', '.join(self.castes()) or '(none)'}.")


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


def normalize_caste(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def check_model_name(model: str) -> str:
    """Refuse names that could not be stored or passed on as one safe token."""
    if len(model) > MAX_MODEL_NAME:
        raise InvalidModelError(f"Invalid model name: {len(model)} characters, at most {MAX_MODEL_NAME} allowed.")
    if not _MODEL_NAME.fullmatch(model):
        raise InvalidModelError(
            f"Invalid model name {model!r}: use the name the proxy knows: letters, digits and . _ : / @ + -, "
            "starting with a letter or digit."
        )
    return model


def check_new_caste_name(caste: str) -> str:
    """A caste created by `set --create` must be a plain name: it becomes a YAML key and a log field."""
    if not _CASTE_NAME.fullmatch(caste):
        raise UnknownCasteError(
            f"Invalid caste name {caste!r}: start with a letter, then letters, digits, '-' or '_' (at most 64)."
        )
    return caste


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


# --- parsing -----------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand `${VAR}` and `${VAR:-default}` as a shell would (empty counts as unset for `:-`)."""
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name, "")
        return found if found or default is None else default

    return _ENV_REF.sub(substitute, value)


@cache
def _strict_loader() -> type[Any]:
    """A safe loader that refuses duplicate keys instead of keeping the last one.

    Built on first use: YAML is needed to read a profile, not to start the server."""
    import yaml

    base = yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader

    class StrictLoader(base):  # type: ignore[misc,valid-type]
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            return mapping

    return StrictLoader


MAX_PROFILE_BYTES = 1024 * 1024
# Anchors and aliases are fine; an alias bomb ("billion laughs") is a small
# file that stands for an enormous tree, and is refused before anything walks it.
MAX_EXPANDED_NODES = 100_000


def parse_yaml(text: str, path: Path | str) -> tuple[dict[str, Any], yaml.Node | None]:
    """Parse the profile text into plain data and its node tree (for line numbers)."""
    import yaml

    if len(text) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path} is {len(text):,} characters; a profile may be at most {MAX_PROFILE_BYTES:,}.")
    try:
        loader = _strict_loader()(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
                raise ProfileError(
                    f"{path} expands to more than {MAX_EXPANDED_NODES:,} YAML nodes through its aliases "
                    "(an alias bomb?); write the values out instead."
                )
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path} is not valid YAML: {_one_line(exc)}. Fix the file; it was not changed.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: the profile must be a mapping of sections, not {type(data).__name__}.")
    return data, node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes the tree would have with every alias written out (capped just past the limit)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_EXPANDED_NODES + 1  # a cycle counts as too big
    total = 1
    if isinstance(node.value, list):
        for item in node.value:
            for child in item if isinstance(item, tuple) else (item,):
                total += _expanded_size(child, sizes)
                if total > MAX_EXPANDED_NODES:
                    return total
    sizes[id(node)] = total
    return total


def parse_profile(text: str, path: Path | str, environ: Mapping[str, str] | None = None) -> Profile:
    """Validate profile text; errors name the file, the key and its line."""
    data, node = parse_yaml(text, path)
    expanded = dict(data)
    if isinstance(data.get("proxy"), dict):
        expanded["proxy"] = _expanded(data["proxy"], environ)
    workers = data.get("workers")
    if isinstance(workers, dict) and isinstance(workers.get("castes"), dict):
        castes = {k: _expanded(v, environ) if isinstance(v, dict) else v for k, v in workers["castes"].items()}
        expanded["workers"] = {**workers, "castes": castes}
    try:
        return Profile.model_validate(expanded)
    except ValidationError as exc:
        problems = [_describe(error, node) for error in exc.errors()[:5]]
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise ProfileError(f"{path} is not a valid profile: {'; '.join(problems)}{more}.") from None


def _expanded(section: dict[str, Any], environ: Mapping[str, str] | None) -> dict[str, Any]:
    """Expand `${VAR}` in the endpoint and token values of a section."""
    keys = ("endpoint", "auth_token", "health_check")
    return {k: expand_env(v, environ) if k in keys and isinstance(v, str) else v for k, v in section.items()}


def _describe(error: Any, root: yaml.Node | None) -> str:
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":
        message = "unknown key (misspelt?)"
    else:
        message = error["msg"][0].lower() + error["msg"][1:]
    line = _line_of(root, loc)
    where = f" (line {line})" if line else ""
    return f"{'.'.join(loc)}{where}: {message}"


def _line_of(node: yaml.Node | None, loc: list[str]) -> int | None:
    """The 1-based line of the node at `loc`, following the path as far as it goes."""
    import yaml

    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            break
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if str(k.value) == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        else:
            if not part.isdigit() or int(part) >= len(node.value):
                break
            node = node.value[int(part)]
            line = node.start_mark.line + 1
    return line


def _one_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"
