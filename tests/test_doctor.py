"""`aether-mcp doctor`, the check_routing tool, the prompts, and the spawn log command."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import TOKEN, trusted, write_profile
from mcp import Client

from aether_mcp.adapters.server import build_server
from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend

pytestmark = pytest.mark.anyio


def doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["aether-mcp", "doctor", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def verdicts(output: str) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in json.loads(output)["checks"]}


def test_a_healthy_setup(colony_profile: Path, backend: LocalBackend, cli_env: dict[str, str]) -> None:
    result = doctor("--json", env=cli_env)
    assert result.returncode == 0, result.stdout
    proxy = backend.url
    assert verdicts(result.stdout) == {
        "profile": "ok",
        "claude cli": "ok",
        f"proxy reachable ({proxy})": "ok",
        f"proxy accepts the token ({proxy})": "ok",
        "route builder": "ok",
        "route scout": "ok",
        "route watcher": "ok",
    }
    text = doctor(env=cli_env).stdout
    assert "Routing is healthy." in text and "costs a few tokens" in text


def test_a_proxy_that_looks_healthy_but_refuses_the_token_fails(
    isolated: Path, backend: LocalBackend, cli_env: dict[str, str]
) -> None:
    write_profile(isolated / "model-profiles.yaml", backend.url)
    env = {**cli_env, "AETHER_TEST_TOKEN": "sk-stale-token"}
    result = doctor("--json", env=env)
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks[f"proxy reachable ({backend.url})"]["verdict"] == "ok"
    refused = checks[f"proxy accepts the token ({backend.url})"]
    assert refused["verdict"] == "fail" and "HTTP 401" in refused["detail"] and refused["fix"]
    assert "sk-stale-token" not in result.stdout


def test_a_down_proxy_and_an_unrouted_model_fail_with_a_fix(isolated: Path, cli_env: dict[str, str]) -> None:
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"]) as partial:
        write_profile(isolated / "model-profiles.yaml", partial.url)
        result = doctor(env=cli_env)
    assert result.returncode == 1
    assert "route scout" in result.stdout and "glm-5 is not routed; the proxy routes kimi-k2.5" in result.stdout
    assert (
        "fix: Add glm-5 to the proxy's model_list, or: aether-mcp caste-models set scout=ROUTED_MODEL" in result.stdout
    )
    down = doctor("--json", env=cli_env)  # the backend has stopped
    assert down.returncode == 1
    assert verdicts(down.stdout)[f"proxy reachable ({partial.url})"] == "fail"


def test_without_a_proxy_each_caste_gets_a_note(isolated: Path, cli_env: dict[str, str]) -> None:
    (isolated / "model-profiles.yaml").write_text("worker_models: {builder: sonnet, scout: haiku}\n")
    result = doctor("--json", env=cli_env)
    assert result.returncode == 0
    checks = json.loads(result.stdout)["checks"]
    assert [c["verdict"] for c in checks[2:]] == ["note", "note"]
    assert "the Claude Code CLI's own backend and login" in checks[2]["detail"]


def test_a_broken_profile_fails_the_first_check(isolated: Path, cli_env: dict[str, str]) -> None:
    (isolated / "model-profiles.yaml").write_text("worker_models: [\n")
    result = doctor("--json", env=cli_env)
    assert result.returncode == 1
    assert verdicts(result.stdout) == {"profile": "fail"}


def test_live_spawns_one_worker_per_model(colony_profile: Path, backend: LocalBackend, cli_env: dict[str, str]) -> None:
    result = doctor("--live", "--json", env=cli_env)
    assert result.returncode == 0, result.stdout
    live = {k: v for k, v in verdicts(result.stdout).items() if k.startswith("live")}
    assert live == {
        "live kimi-k2.5 (as builder)": "ok",
        "live glm-5 (as scout)": "ok",
        "live minimax-2.5 (as watcher)": "ok",
    }
    assert sorted(backend.models_asked()) == ["glm-5", "kimi-k2.5", "minimax-2.5"]


def test_live_says_what_to_do_about_a_misroute(isolated: Path, cli_env: dict[str, str]) -> None:
    """A backend that answers kimi-k2.5's requests as another model: the live check fails with a fix that names
    the proxy's model_list, not only a transcript to read."""
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], claims={"kimi-k2.5": "cheap-model-7b"}) as lying:
        write_profile(isolated / "model-profiles.yaml", lying.url)
        (isolated / "model-profiles.yaml").write_text(
            (isolated / "model-profiles.yaml").read_text().replace("  scout: glm-5\n  watcher: minimax-2.5\n", "")
        )
        trusted(isolated / "model-profiles.yaml")
        result = doctor("--live", "--json", env=cli_env)
    live = next(c for c in json.loads(result.stdout)["checks"] if c["name"].startswith("live"))
    assert live["verdict"] == "fail"
    assert "The proxy served cheap-model-7b for kimi-k2.5" in live["fix"] and "model_list" in live["fix"]


async def test_check_routing_tool(colony_profile: Path, backend: LocalBackend) -> None:
    async with Client(build_server(ProfileStore())) as client:
        report = (await client.call_tool("check_routing", {"caste": "scout"})).structured_content
        assert report is not None and report["healthy"] is True
        assert [c["name"] for c in report["checks"]][-1] == "route scout"
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["check_routing"].annotations.read_only_hint is True
    assert TOKEN not in json.dumps(report)


async def test_prompts_are_listed_and_carry_the_routing_table(colony_profile: Path) -> None:
    async with Client(build_server(ProfileStore())) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert sorted(prompts) == ["colony", "routing"]
        assert [a.name for a in prompts["colony"].arguments or []] == ["goal"]
        colony = await client.get_prompt("colony", {"goal": "add a cache to the API"})
        text = colony.messages[0].content.text  # type: ignore[union-attr]
        assert text.startswith("Goal: add a cache to the API")
        assert "- builder: kimi-k2.5 (profile)" in text and "mcp__aether__spawn_worker" in text and "wait=false" in text
        routing = await client.get_prompt("routing", {})
        assert "- watcher: minimax-2.5 (profile)" in routing.messages[0].content.text  # type: ignore[union-attr]


def test_workers_lists_the_spawn_log_newest_first(isolated: Path, cli_env: dict[str, str]) -> None:
    log = isolated / ".aether" / "spawn-log.jsonl"
    log.parent.mkdir()
    entries = [
        {
            "caste": "scout",
            "model": "glm-5",
            "status": "succeeded",
            "routing_verified": True,
            "duration_s": 1.25,
            "usage": {"input_tokens": 1000, "output_tokens": 20},
            "cost_usd": 0.01,
            "finished_at": "2026-11-24T10:00:00+00:00",
        },
        {
            "worker_id": "builder-0123abcd",
            "caste": "builder",
            "description": "add the greeting",
            "model": "kimi-k2.5",
            "status": "failed",
            "routing_verified": False,
            "routing_mismatches": [{"code": "answer_names_other", "asked": "kimi-k2.5", "seen": "x", "message": "m"}],
            "duration_s": 3.5,
            "usage": None,
            "cost_usd": None,
            "finished_at": "2026-11-24T11:00:00+00:00",
        },
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries) + "not json\n")
    result = subprocess.run(["aether-mcp", "workers"], capture_output=True, text=True, env=cli_env, check=False)
    assert result.stdout.splitlines() == [
        "WHEN                  WORKER            CASTE    MODEL      VERIFIED                 STATUS     TIME   TOKENS"
        "  COST     NODE   DESCRIPTION",
        "2026-11-24T11:00:00Z  builder-0123abcd  builder  kimi-k2.5  NO (answer_names_other)  failed     3.5 s  -     "
        "  -        local  add the greeting",
        "2026-11-24T10:00:00Z  -                 scout    glm-5      yes                      succeeded  1.2 s  1,020 "
        "  $0.0100  local",
    ]
    limited = subprocess.run(
        ["aether-mcp", "workers", "--json", "--limit", "1"], capture_output=True, text=True, env=cli_env, check=False
    )
    assert [e["caste"] for e in json.loads(limited.stdout)] == ["builder"]


FAILURES = {
    # setup: (the failed check, its detail as a pattern, its fix)
    "no cli": (
        "claude cli",
        r"The Claude Code CLI named by AETHER_CLAUDE_CLI \(/nonexistent/claude\) is not an executable file\.",
        "Point AETHER_CLAUDE_CLI at a Claude Code CLI, or remove it to use the next place one can be found.",
    ),
    "proxy down": (
        "proxy reachable",
        r"The proxy at http://127\.0\.0\.1:\d+ is not reachable \(\[Errno 111\] Connection refused\)\.",
        "Start it (for LiteLLM: `litellm --config config.yaml --port 4000`) or correct proxy.endpoint in the profile.",
    ),
    "stale token": (
        "proxy accepts the token",
        r"The proxy at http://127\.0\.0\.1:\d+ rejected the workers' token \(HTTP 401: authentication_error "
        r"invalid x-api-key or bearer token\)\.",
        "Set proxy.auth_token in the profile (or the variable it names, such as LITELLM_AUTH_TOKEN) to a key the "
        "proxy accepts.",
    ),
    "broken profile": (
        "profile",
        r"/\S+/model-profiles\.yaml is not valid YAML: line 2, column 1: did not find expected ',' or '\]'\.",
        "Fix the file; it was not changed.",
    ),
}


@pytest.mark.parametrize("setup", list(FAILURES))
def test_each_failure_says_its_problem_and_its_fix_once(
    isolated: Path, backend: LocalBackend, cli_env: dict[str, str], setup: str
) -> None:
    check, detail_pattern, fix = FAILURES[setup]
    env = dict(cli_env)
    endpoint = backend.url
    if setup == "no cli":
        env["AETHER_CLAUDE_CLI"] = "/nonexistent/claude"
    elif setup == "proxy down":
        with LocalBackend() as gone:
            endpoint = gone.url
    elif setup == "stale token":
        env["AETHER_TEST_TOKEN"] = "sk-stale-token"
    write_profile(isolated / "model-profiles.yaml", endpoint)
    if setup == "broken profile":
        (isolated / "model-profiles.yaml").write_text("worker_models: [unclosed\n")
    result = doctor(env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith(check) and " FAIL " in line)
    # the problem on the check's line, the advice once on the next: never run together as "... .. Start it"
    assert re.fullmatch(detail_pattern, lines[failed].split(" FAIL ", 1)[1].strip()), lines[failed]
    assert lines[failed + 1].strip() == f"fix: {fix}"
