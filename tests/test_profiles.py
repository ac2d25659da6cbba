"""The profile model: both Aether forms, every resolution source, and errors that say what to fix."""

from __future__ import annotations

import pytest
from helpers import DATA

from aether_mcp.errors import InvalidModelError, ProfileError, UnknownCasteError
from aether_mcp.profile.parsing import expand_env, parse_profile
from aether_mcp.profile.resolution import resolve
from aether_mcp.profile.schema import check_model_name


def load(name: str, environ: dict[str, str] | None = None):
    path = DATA / name
    return parse_profile(path.read_text(), path, environ or {})


def test_aether_1_0_profile_loads_unchanged() -> None:
    profile = load("aether-1.0.yaml")
    assert profile.version == "1.0"
    assert profile.castes() == ["prime", "architect", "oracle", "builder", "scout", "route_setter", "watcher"]
    assert profile.model_metadata is not None
    assert profile.model_metadata["kimi-k2.5"].context_window == 256000
    assert profile.task_routing is not None
    assert profile.task_routing.complexity_indicators["validate"].keywords == ["test", "review", "audit"]


def test_slot_form_loads_unchanged() -> None:
    profile = load("aether-slots.yaml")
    assert profile.model_slots == {"opus": "glm-5", "sonnet": "glm-5-turbo", "haiku": "glm-4.5-air", "inherit": None}
    assert profile.user_overrides == {}


@pytest.mark.parametrize(
    ("fixture", "caste", "task", "model", "source", "slot"),
    [
        ("aether-1.0.yaml", "builder", None, "kimi-k2.5", "profile", None),
        ("aether-1.0.yaml", "builder", "design the architecture", "kimi-k2.5", "profile", None),
        ("aether-slots.yaml", "prime", None, "glm-5", "slot", "opus"),
        ("aether-slots.yaml", "builder", None, "glm-5-turbo", "slot", "sonnet"),
        ("aether-slots.yaml", "scout", None, "glm-4.5-air", "slot", "haiku"),
        ("aether-slots.yaml", "oracle", None, "minimax-2.5", "profile", None),
        # inherit is the parent session's model; this server was not told one, so the CLI picks its own.
        ("aether-slots.yaml", "chronicler", None, None, "inherit", "inherit"),
    ],
)
def test_resolution_sources(
    fixture: str, caste: str, task: str | None, model: str | None, source: str, slot: str | None
) -> None:
    entry = resolve(load(fixture), caste, task)
    assert (entry.model, entry.source, entry.slot) == (model, source, slot)


def test_override_wins_and_keeps_the_profile_entry() -> None:
    text = (DATA / "aether-1.0.yaml").read_text() + "user_overrides:\n  builder: glm-5\n"
    entry = resolve(parse_profile(text, "p.yaml", {}), "builder")
    assert (entry.model, entry.source, entry.default_model, entry.override) == (
        "glm-5",
        "override",
        "kimi-k2.5",
        "glm-5",
    )
    assert entry.metadata is not None and entry.metadata.provider == "zhipu"


def test_override_naming_a_slot_resolves_through_it() -> None:
    text = (DATA / "aether-slots.yaml").read_text().replace("user_overrides: {}", "user_overrides: {scout: opus}")
    entry = resolve(parse_profile(text, "p.yaml", {}), "scout")
    assert (entry.model, entry.source, entry.slot) == ("glm-5", "override", "opus")


TASKLESS = """\
worker_models:
  builder: kimi-k2.5
  chaos: null
task_routing:
  default_model: kimi-k2.5
  complexity_indicators:
    complex: {keywords: [design, architecture], model: glm-5}
    validate: {keywords: [test, review], model: minimax-2.5}
"""


@pytest.mark.parametrize(
    ("task", "model", "source"),
    [
        ("Design the cache layer", "glm-5", "task"),
        ("review this diff", "minimax-2.5", "task"),
        ("write the docs", "kimi-k2.5", "default"),
        ("retest nothing: 'test' only counts as a word", "minimax-2.5", "task"),
        ("attestation", "kimi-k2.5", "default"),
        (None, "kimi-k2.5", "default"),
    ],
)
def test_task_routing_only_for_a_caste_without_a_model(task: str | None, model: str, source: str) -> None:
    profile = parse_profile(TASKLESS, "p.yaml", {})
    entry = resolve(profile, "chaos", task)
    assert (entry.model, entry.source) == (model, source)
    assert resolve(profile, "builder", task).model == "kimi-k2.5"


def test_inherit_is_the_parent_sessions_model() -> None:
    """Aether's `inherit: null  # uses parent model`: the server's ANTHROPIC_MODEL, never task routing."""
    text = "model_slots: {inherit: null}\nworker_models: {scout: inherit}\ntask_routing: {default_model: kimi}\n"
    profile = parse_profile(text, "p.yaml", {})
    entry = resolve(profile, "scout", parent_model="parent-model")
    assert (entry.model, entry.source, entry.slot) == ("parent-model", "inherit", "inherit")
    assert entry.note is not None and "ANTHROPIC_MODEL" in entry.note
    unknown = resolve(profile, "scout", "design it")
    assert (unknown.model, unknown.source) == (None, "inherit")
    assert unknown.note is not None and "CLI's own default" in unknown.note


@pytest.mark.parametrize("name", ["route-setter", "ROUTE_SETTER", "Route-Setter", " route_setter "])
def test_caste_names_match_loosely(name: str) -> None:
    assert resolve(load("aether-1.0.yaml"), name).caste == "route_setter"


def test_unknown_caste_lists_the_known_ones() -> None:
    with pytest.raises(UnknownCasteError) as caught:
        resolve(load("aether-1.0.yaml"), "scot")
    assert str(caught.value) == (
        "Unknown caste 'scot'. Known castes: prime, architect, oracle, builder, scout, route_setter, watcher."
    )


@pytest.mark.parametrize(
    ("environ", "token"),
    [
        ({}, "sk-litellm-local"),
        ({"LITELLM_AUTH_TOKEN": "sk-from-env"}, "sk-from-env"),
        ({"LITELLM_AUTH_TOKEN": ""}, "sk-litellm-local"),
    ],
)
def test_proxy_values_expand_environment_variables(environ: dict[str, str], token: str) -> None:
    proxy = load("aether-1.0.yaml", environ).proxy
    assert proxy is not None and proxy.auth_token is not None
    assert proxy.auth_token.get_secret_value() == token
    assert token not in repr(proxy)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("${A}", "x"), ("${MISSING}", ""), ("${MISSING:-d}", "d"), ("pre-${A}-${B:-b}", "pre-x-b"), ("$A", "$A")],
)
def test_expand_env(value: str, expected: str) -> None:
    assert expand_env(value, {"A": "x"}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "worker_models:\n  builder: [a, b]\n",
            "p.yaml is not a valid profile: worker_models.builder (line 2): input should be a valid string.",
        ),
        (
            "worker_models: {}\nproxy:\n  endpont: http://x\n",
            "p.yaml is not a valid profile: proxy.endpoint (line 2): field required; proxy.endpont (line 3): unknown key (misspelt?).",
        ),
        (
            "task_routing:\n  default_modle: x\n",
            "p.yaml is not a valid profile: task_routing.default_modle (line 2): unknown key (misspelt?).",
        ),
        (
            "model_metadata:\n  x: {context_window: big}\n",
            "p.yaml is not a valid profile: model_metadata.x.context_window (line 2): input should be a valid integer, unable to parse string as an integer.",
        ),
        (
            "worker_models: {a: x, a: y}\n",
            "p.yaml is not valid YAML: line 1, column 23: duplicate key 'a'. Fix the file; it was not changed.",
        ),
        (
            "worker_models: [\n",
            "p.yaml is not valid YAML: line 2, column 1: did not find expected node content. Fix the file; it was not changed.",
        ),
        ("- a\n- b\n", "p.yaml: the profile must be a mapping of sections, not list."),
    ],
)
def test_invalid_profiles_name_the_key_and_the_file(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "p.yaml", {})
    assert str(caught.value) == message


def test_unknown_top_level_sections_are_kept() -> None:
    profile = parse_profile("worker_models: {a: x}\ncolony_settings: {size: 3}\n", "p.yaml", {})
    assert profile.model_extra == {"colony_settings": {"size": 3}}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "two words",
        "tab\there",
        "line\nbreak",
        "x" * 201,
        "-rf",
        "nul\x00",
        "a;rm",
        "$(id)",
        "`id`",
        "模型",
        "*x",
        "a'b",
    ],
)
def test_model_names_must_be_one_safe_token(bad: str) -> None:
    with pytest.raises(InvalidModelError):
        check_model_name(bad)


@pytest.mark.parametrize(
    "good",
    ["glm-5", "anthropic/claude-sonnet-4-5", "kimi-k2.5", "gpt-4o:latest", "claude-3-5-sonnet@20240620", "x" * 200],
)
def test_model_names_accepted(good: str) -> None:
    assert check_model_name(good) == good
