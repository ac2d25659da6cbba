"""Hostile input to every tool, the CLI and the profile loader: a clear error, the server stays up, nothing written.

The case lists here are the ones docs/reliability.md counts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import DATA, claude_processes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from aether_mcp.adapters.server import build_server
from aether_mcp.errors import ProfileError
from aether_mcp.profile import yaml_edit
from aether_mcp.profile.names import MODEL_NAME_PATTERN
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.profile.store import ProfileStore

pytestmark = pytest.mark.anyio

BIG_TASK = "x" * (1024 * 1024)

TOOL_CASES: list[tuple[str, dict[str, Any], str]] = [
    # wrong types
    ("get_caste_model", {"caste": 5}, "Input should be a valid string"),
    ("get_caste_model", {"caste": ["scout"]}, "Input should be a valid string"),
    ("get_caste_model", {"task": {"a": 1}}, "Input should be a valid string"),
    ("set_caste_model", {"caste": "scout", "model": 5}, "Input should be a valid string"),
    ("set_caste_model", {"caste": "scout", "model": "glm-5", "create": "maybe"}, "valid boolean"),
    ("spawn_worker", {"caste": "builder", "task": ["hi"]}, "Input should be a valid string"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "wait": [1]}, "valid boolean"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "timeout_s": "soon"}, "valid number"),
    ("get_worker", {"worker_id": "x", "wait_s": "long"}, "valid number"),
    # missing arguments
    ("set_caste_model", {"caste": "scout"}, "model"),
    ("set_caste_model", {"model": "glm-5"}, "caste"),
    ("reset_caste_model", {}, "caste"),
    ("spawn_worker", {"caste": "builder"}, "task"),
    ("get_worker", {}, "worker_id"),
    ("cancel_worker", {}, "worker_id"),
    # extra arguments
    ("get_caste_model", {"caste": "scout", "verbose": True}, "get_caste_model takes no argument 'verbose'"),
    ("set_caste_model", {"caste": "scout", "modle": "glm-5"}, "set_caste_model takes no argument 'modle'"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "timeout": 3}, "spawn_worker takes no argument 'timeout'"),
    ("list_workers", {"all": True}, "list_workers takes no argument 'all'"),
    ("check_routing", {"castes": "scout"}, "check_routing takes no argument 'castes'"),
    # empty strings
    ("get_caste_model", {"caste": ""}, "Unknown caste ''"),
    ("set_caste_model", {"caste": "scout", "model": ""}, "Invalid model name ''"),
    ("set_caste_model", {"caste": "", "model": "glm-5"}, "Unknown caste ''"),
    ("reset_caste_model", {"caste": ""}, "Unknown caste ''"),
    ("spawn_worker", {"caste": "builder", "task": ""}, "The task is empty"),
    ("get_worker", {"worker_id": ""}, "No worker ''"),
    ("cancel_worker", {"worker_id": ""}, "No worker ''"),
    # control characters, newlines, shell metacharacters, unicode
    ("set_caste_model", {"caste": "scout", "model": "glm-5\nproxy: evil"}, "Invalid model name"),
    ("set_caste_model", {"caste": "scout", "model": "glm\x00-5"}, "Invalid model name"),
    ("set_caste_model", {"caste": "scout", "model": "$(touch owned)"}, "Invalid model name"),
    ("set_caste_model", {"caste": "scout", "model": "a;rm -rf ~"}, "Invalid model name"),
    ("set_caste_model", {"caste": "scout", "model": "`id`"}, "Invalid model name"),
    ("set_caste_model", {"caste": "scout", "model": "模型"}, "Invalid model name"),
    ("set_caste_model", {"caste": "scout", "model": "x" * 201}, "at most 200"),
    ("set_caste_model", {"caste": "scout\nproxy", "model": "glm-5"}, "Unknown caste"),
    ("set_caste_model", {"caste": "$(id)", "model": "glm-5"}, "Unknown caste"),
    ("set_caste_model", {"caste": "🐜", "model": "glm-5", "create": True}, "Invalid caste name"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "model": "--dangerously-skip-permissions"}, "Invalid model"),
    # path separators and ..
    ("get_caste_model", {"caste": "../../etc/passwd"}, "Unknown caste"),
    ("set_caste_model", {"caste": "../scout", "model": "glm-5", "create": True}, "Invalid caste name"),
    ("set_caste_model", {"caste": "a/b", "model": "glm-5", "create": True}, "Invalid caste name"),
    ("reset_caste_model", {"caste": "/etc/hosts"}, "Unknown caste"),
    ("check_routing", {"caste": "../x"}, "Unknown caste"),
    # cwd: missing, a file, relative
    ("spawn_worker", {"caste": "builder", "task": "hi", "cwd": "/nonexistent/dir"}, "does not exist"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "cwd": "/etc/hostname"}, "is not a directory"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "cwd": "relative/dir"}, "must be an absolute path"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "cwd": ""}, "must be an absolute path"),
    # numbers out of range
    ("spawn_worker", {"caste": "builder", "task": "hi", "timeout_s": -5}, "The timeout must be more than 0"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "timeout_s": 0}, "The timeout must be more than 0"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "timeout_s": 1e300}, "at most 86400 seconds"),
    ("get_worker", {"worker_id": "x", "wait_s": -1}, "greater than or equal to 0"),
    ("get_worker", {"worker_id": "x", "wait_s": 1e9}, "less than or equal to 3600"),
    ("get_worker", {"worker_id": "x", "offset": -1}, "greater than or equal to 0"),
    ("get_worker", {"worker_id": "x", "limit": 10**9}, "less than or equal to 100000"),
    # the cooperation tools
    ("spawn_worker", {"caste": "builder", "task": "hi", "isolation": "container"}, "Input should be 'none' or"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "isolation": "worktree", "base": "--output=x"}, "base"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "output_schema": {"type": 5}}, "not a valid JSON Schema"),
    ("spawn_worker", {"caste": "builder", "task": "hi", "output_schema": "yes"}, "valid dictionary"),
    ("continue_worker", {"worker_id": "nobody-1", "message": "more"}, "No worker 'nobody-1'"),
    ("continue_worker", {"worker_id": "nobody-1"}, "message"),
    ("discard_worker", {"worker_id": "../../etc"}, "No worker '../../etc'"),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("tool", "arguments", "message"), TOOL_CASES)
async def test_hostile_tool_calls(
    colony_profile: Path, backend: Any, tmp_path: Path, tool: str, arguments: dict[str, Any], message: str
) -> None:
    # The whole test folder (work directory, HOME, and beside them): a caste name like '../scout' must not
    # become a path that writes outside .aether/, nor a payload a file anywhere.
    before = snapshot(tmp_path)
    async with Client(build_server(ProfileStore())) as client:
        result = await client.call_tool(tool, arguments)
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert message in text
        assert "Traceback" not in text
        answer = await client.call_tool("get_caste_model", {"caste": "scout"})  # still up
        assert not answer.is_error
    assert snapshot(tmp_path) == before
    assert backend.models_asked() == []
    assert claude_processes(str(tmp_path)) == []  # no worker was started, even for a moment


async def test_a_1mb_task_and_odd_but_valid_input_work(colony_profile: Path, backend: Any, tmp_path: Path) -> None:
    link = tmp_path / "link-to-work"
    link.symlink_to(colony_profile.parent)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    async with Client(build_server(ProfileStore())) as client:
        big = await client.call_tool("spawn_worker", {"caste": "builder", "task": BIG_TASK})
        assert not big.is_error and big.structured_content["status"] == "succeeded"  # type: ignore[index]
        linked = await client.call_tool(
            "spawn_worker", {"caste": "Builder", "task": "héllo 🐜 $(id)", "cwd": str(link)}
        )
        assert not linked.is_error
        assert linked.structured_content["cwd"] == str(colony_profile.parent)  # type: ignore[index]
        broken = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "cwd": str(dangling)})
        assert broken.is_error and "does not exist" in broken.content[0].text  # type: ignore[union-attr]
    assert backend.models_asked() == ["kimi-k2.5", "kimi-k2.5"]


CLI_CASES: list[tuple[list[str], str]] = [
    (["caste-models", "set", "scout=$(id)"], "Invalid model name '$(id)'"),
    (["caste-models", "set", "scout=a\nb"], "Invalid model name"),
    (["caste-models", "set", "../etc=glm-5"], "Unknown caste '../etc'"),
    (["caste-models", "set", "../etc=glm-5", "--create"], "Invalid caste name '../etc'"),
    (["caste-models", "set", "=glm-5"], "Unknown caste ''"),
    (["caste-models", "set", "scout="], "Invalid model name ''"),
    (["caste-models", "set", "a", "b", "c"], "Use: aether-mcp caste-models set CASTE=MODEL"),
    (["caste-models", "reset", ""], "Unknown caste ''"),
    (["caste-models", "list", "--task", "$(touch owned) design"], ""),  # a task is only read: this one works
    (["spawn", "scot", "hi"], "Unknown caste 'scot'"),
    (["spawn", "builder", ""], "The task is empty"),
    (["spawn", "builder", "hi", "--cwd", "/nonexistent"], "does not exist"),
    (["spawn", "builder", "hi", "--timeout", "-1"], "The timeout must be more than 0"),
    (["spawn", "builder", "hi", "--timeout", "nan"], "The timeout must be more than 0"),
    (["spawn", "builder", "hi", "--model", "x y"], "Invalid model name"),
    (["doctor", "../x"], "Unknown caste '../x'"),
    (["--profiles", "/nonexistent.yaml", "caste-models", "list"], "Profile not found: /nonexistent.yaml"),
    (["--profiles", "/etc/passwd", "caste-models", "list"], "/etc/passwd: the profile must be a mapping of sections"),
]


@pytest.mark.parametrize(("args", "message"), CLI_CASES)
def test_hostile_cli_input(
    colony_profile: Path, cli_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    before = snapshot(tmp_path)
    done = subprocess.run(["aether-mcp", *args], capture_output=True, text=True, env=cli_env, timeout=60, check=False)
    if message:
        assert done.returncode == 1
        assert done.stderr.startswith("Error: ") and message in done.stderr
    else:
        assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(tmp_path) == before


def bomb() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\nworker_models: {scout: glm-5}\n"


PROFILE_CASES: list[tuple[str, bytes, str]] = [
    ("binary", bytes(range(256)) * 4, "is not UTF-8 text"),
    ("nul bytes", b"worker_models: {scout: a}\n\x00\x01\x02\n", "is not valid YAML"),
    ("tab-indented", b"worker_models:\n\tscout: glm-5\n", "is not valid YAML"),
    ("duplicate keys", b"worker_models: {scout: a}\nworker_models: {scout: b}\n", "duplicate key 'worker_models'"),
    ("duplicate castes", b"worker_models:\n  scout: a\n  scout: b\n", "duplicate key 'scout'"),
    ("alias bomb", bomb().encode(), "alias bomb"),
    ("10 MB", b"worker_models: {scout: a}\n" + b"# padding\n" * 1_000_000, "a profile may be at most"),
    ("a list", b"- scout\n- builder\n", "must be a mapping of sections"),
    ("a scalar", b"just text\n", "must be a mapping of sections"),
    ("version", b"version: [1]\nworker_models: {scout: a}\n", "version"),
    ("worker_models", b"worker_models: [scout, builder]\n", "worker_models"),
    ("worker_models value", b"worker_models: {scout: {model: a}}\n", "worker_models.scout"),
    ("model_slots", b"model_slots: opus\nworker_models: {scout: a}\n", "model_slots"),
    ("model_metadata", b"worker_models: {scout: a}\nmodel_metadata: {a: {context_window: huge}}\n", "context_window"),
    ("model_metadata key", b"worker_models: {scout: a}\nmodel_metadata: {a: {speeed: fast}}\n", "speeed"),
    ("task_routing", b"worker_models: {scout: a}\ntask_routing: [a]\n", "task_routing"),
    (
        "complexity_indicators",
        b"worker_models: {s: a}\ntask_routing: {complexity_indicators: {c: {keywords: x}}}\n",
        "keywords",
    ),
    ("user_overrides", b"worker_models: {scout: a}\nuser_overrides: [scout]\n", "user_overrides"),
    ("proxy", b"worker_models: {scout: a}\nproxy: localhost:4000\n", "proxy"),
    ("proxy endpoint", b"worker_models: {scout: a}\nproxy: {endpoint: [x]}\n", "proxy.endpoint"),
    ("workers", b"worker_models: {scout: a}\nworkers: {max_concurrent_workers: many}\n", "max_concurrent_workers"),
    ("workers limit", b"worker_models: {scout: a}\nworkers: {max_concurrent_workers: 0}\n", "max_concurrent_workers"),
    (
        "workers caste",
        b"worker_models: {scout: a}\nworkers: {castes: {scout: {permission_mode: yolo}}}\n",
        "permission_mode",
    ),
    ("warm workers", b"worker_models: {scout: a}\nworkers: {warm_workers: {scout: 99}}\n", "warm_workers"),
]


@pytest.mark.parametrize(("name", "content", "message"), PROFILE_CASES, ids=[c[0] for c in PROFILE_CASES])
async def test_hostile_profiles(isolated: Path, name: str, content: bytes, message: str) -> None:
    path = isolated / "model-profiles.yaml"
    path.write_bytes(content)
    async with Client(build_server(ProfileStore())) as client:
        for tool, arguments in (
            ("get_caste_model", {}),
            ("set_caste_model", {"caste": "scout", "model": "glm-5"}),
            ("reset_caste_model", {"caste": "scout"}),
            ("spawn_worker", {"caste": "scout", "task": "hi"}),
        ):
            result = await client.call_tool(tool, arguments)
            assert result.is_error, (tool, result.content)
            text = result.content[0].text  # type: ignore[union-attr]
            assert message in text and str(path) in text, text
        assert not (await client.call_tool("list_workers", {})).is_error  # still up
    assert path.read_bytes() == content
    assert sorted(p.name for p in isolated.iterdir()) == ["model-profiles.yaml"]


def test_an_empty_profile_has_no_castes_and_says_so(isolated: Path, cli_env: dict[str, str]) -> None:
    (isolated / "model-profiles.yaml").write_text("")
    done = subprocess.run(
        ["aether-mcp", "caste-models", "set", "scout=glm-5"], capture_output=True, text=True, env=cli_env, check=False
    )
    assert (done.returncode, done.stderr) == (1, "Error: Unknown caste 'scout'. Known castes: (none).\n")
    assert (isolated / "model-profiles.yaml").read_text() == ""


# --- properties ----------------------------------------------------------------

yaml_ish = st.text(alphabet=st.sampled_from(list("abc:{}[]-,'\"&*!|>#\n\t 01.%@`\\")), max_size=200)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=300), yaml_ish))
def test_the_loader_accepts_or_refuses_with_a_profile_error(text: str) -> None:
    try:
        parse_profile(text, "fuzz.yaml", {})
    except ProfileError as exc:
        assert str(exc).startswith("fuzz.yaml")


section_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
sections = st.sampled_from(
    ["version", "worker_models", "model_slots", "model_metadata", "task_routing", "user_overrides", "proxy", "workers"]
)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(sections, section_values, max_size=4))
def test_wrong_types_in_any_section_are_profile_errors(data: dict[str, Any]) -> None:
    import yaml

    text = yaml.safe_dump(data)
    try:
        profile = parse_profile(text, "typed.yaml", {})
    except ProfileError as exc:
        assert str(exc).startswith("typed.yaml")
    else:
        profile.castes()  # a valid profile resolves


model_names = st.from_regex(MODEL_NAME_PATTERN, fullmatch=True).filter(lambda m: len(m) <= 200)
AETHER_TEXT = (DATA / "aether-1.0.yaml").read_text()
SLOTS_TEXT = (DATA / "aether-slots.yaml").read_text()
CASTES = ["prime", "architect", "oracle", "builder", "scout", "route_setter", "watcher"]


@settings(max_examples=300, deadline=None)
@given(
    original=st.sampled_from([AETHER_TEXT, SLOTS_TEXT]),
    changes=st.lists(st.tuples(st.sampled_from(CASTES[:4]), model_names), min_size=1, max_size=5),
)
def test_set_then_reset_round_trips(original: str, changes: list[tuple[str, str]]) -> None:
    text, expected = original, {}
    for caste, model in changes:
        text = yaml_edit.set_override(text, caste, model)
        expected[caste] = model
        assert (parse_profile(text, "p.yaml", {}).user_overrides or {}) == expected
    for caste in expected:
        text = yaml_edit.remove_override(text, caste)
    assert text == original


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=model_names, caste=st.sampled_from(CASTES))
def test_set_and_reset_through_the_store(aether_profile: Path, model: str, caste: str) -> None:
    original = aether_profile.read_bytes()
    store = ProfileStore(aether_profile)
    assert store.set_override(caste, model).model == model
    assert store.load()[0].user_overrides == {caste: model}
    assert store.reset_override(caste).had_override
    assert aether_profile.read_bytes() == original
    assert os.listdir(aether_profile.parent) == ["model-profiles.yaml", ".model-profiles.yaml.lock"] or sorted(
        os.listdir(aether_profile.parent)
    ) == [".model-profiles.yaml.lock", "model-profiles.yaml"]
