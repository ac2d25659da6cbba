"""The local backend plays a parent that issues a wave: several calls in one message, models that take their
time, and a parent that makes exactly the calls its tool results name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import MAX_FOLLOWS, Call, LocalBackend, Turn, named_calls
from aether_mcp.workers.claude_cli import find_cli

PARENT = "parent-model"


def ask(backend: LocalBackend, model: str, messages: list[dict[str, Any]], **headers: str) -> dict[str, Any]:
    body = json.dumps({"model": model, "max_tokens": 100, "messages": messages}).encode()
    request = urllib.request.Request(backend.url + "/v1/messages", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def results(*texts: str) -> list[dict[str, Any]]:
    """A conversation whose last message hands back one tool result per text, as Claude Code sends it."""
    ids = [f"toolu_{i}" for i in range(len(texts))]
    uses = [{"type": "tool_use", "id": i, "name": "Agent", "input": {"prompt": "p" * 10}} for i in ids]
    blocks = [{"type": "tool_result", "tool_use_id": i, "content": t} for i, t in zip(ids, texts, strict=True)]
    return [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": uses},
        {"role": "user", "content": blocks},
    ]


def calls_of(answer: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(b["name"], b["input"]) for b in answer["content"] if b["type"] == "tool_use"]


def test_a_turn_makes_several_calls_in_one_message() -> None:
    wave = Turn(calls=(Call("Agent", {"description": "one"}), Call("Agent", {"description": "two"})))
    with LocalBackend(scripts={PARENT: [wave]}) as backend:
        answer = ask(backend, PARENT, [{"role": "user", "content": "build"}])
    assert answer["stop_reason"] == "tool_use"
    assert calls_of(answer) == [("Agent", {"description": "one"}), ("Agent", {"description": "two"})]
    assert len({b["id"] for b in answer["content"]}) == 2


def test_each_model_answers_after_its_own_delay() -> None:
    took: dict[str, float] = {}

    def timed(backend: LocalBackend, model: str) -> None:
        began = time.monotonic()
        ask(backend, model, [{"role": "user", "content": "hi"}])
        took[model] = time.monotonic() - began

    with LocalBackend(delays={"slow-model": 1.5}) as backend:
        threads = [threading.Thread(target=timed, args=(backend, m)) for m in ("slow-model", PARENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert took["slow-model"] >= 1.5
    assert took[PARENT] < 1.0  # answered at once, while the slow model was still thinking


def test_the_calls_a_line_names_are_read_with_their_arguments() -> None:
    texts = [
        'Started. Collect it with:\nmcp__aether__get_worker {"worker_id": "builder-1a2b3c4d", "wait_s": 900}',
        '`mcp__aether__get_worker {"worker_id": "builder-5e6f7a8b", "wait_s": 900}` when you need it.',
        'again: mcp__aether__get_worker {"worker_id": "builder-1a2b3c4d", "wait_s": 900}',  # named twice, made once
        'Call mcp__aether__spawn_worker instead, with caste "builder"',  # prose: no arguments, no call
        'mcp__aether__get_worker {"worker_id": broken}',  # not JSON
        'mcp__aether__get_worker ["a", "list"]',  # not an object
        'Agent {"prompt": "x"}',  # not a full MCP tool name
    ]
    assert named_calls(texts) == (
        Call("mcp__aether__get_worker", {"worker_id": "builder-1a2b3c4d", "wait_s": 900}),
        Call("mcp__aether__get_worker", {"worker_id": "builder-5e6f7a8b", "wait_s": 900}),
    )


def test_a_following_parent_makes_the_named_calls_in_one_message_then_reports_every_result() -> None:
    with LocalBackend(scripts={PARENT: [Turn(follow=True)]}) as backend:
        denied = results(
            'denied; it runs as builder-1: mcp__aether__get_worker {"worker_id": "builder-1"}',
            'denied; it runs as builder-2: mcp__aether__get_worker {"worker_id": "builder-2"}',
        )
        collect = ask(backend, PARENT, denied)
        done = [*denied, {"role": "assistant", "content": collect["content"]}]
        done += [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "answer 1"}]}]
        final = ask(backend, PARENT, done)
    assert calls_of(collect) == [
        ("mcp__aether__get_worker", {"worker_id": "builder-1"}),
        ("mcp__aether__get_worker", {"worker_id": "builder-2"}),
    ]
    assert final["stop_reason"] == "end_turn"
    text = final["content"][0]["text"]
    assert all(part in text for part in ("builder-1", "builder-2", "answer 1"))


def test_a_following_parent_plays_its_other_turn_when_the_first_results_name_no_call() -> None:
    spawn = Turn(calls=(Call("mcp__aether__spawn_worker", {"caste": "builder", "task": "the prompt"}),))
    with LocalBackend(scripts={PARENT: [Turn(follow=True, otherwise=spawn)]}) as backend:
        advised = ask(backend, PARENT, results("Call mcp__aether__spawn_worker instead, with the prompt unchanged."))
        after = ask(backend, PARENT, results('{"worker_id": "builder-1", "status": "succeeded"}'))
    assert calls_of(advised) == [("mcp__aether__spawn_worker", {"caste": "builder", "task": "the prompt"})]
    assert after["stop_reason"] == "end_turn"  # the other turn is for the first results only
    assert '"status": "succeeded"' in after["content"][0]["text"]


def test_a_result_that_names_itself_is_followed_a_bounded_number_of_rounds() -> None:
    loop = results('still running: mcp__aether__get_worker {"worker_id": "builder-1"}')
    with LocalBackend(scripts={PARENT: [Turn(follow=True)]}) as backend:
        answers = [ask(backend, PARENT, loop) for _ in range(MAX_FOLLOWS + 1)]
    assert [a["stop_reason"] for a in answers] == ["tool_use"] * MAX_FOLLOWS + ["end_turn"]


def test_each_request_records_when_it_came_who_sent_it_and_what_the_model_wrote() -> None:
    with LocalBackend() as backend:
        before = backend.clock()
        ask(
            backend,
            "kimi-k2.5",
            results("r1", "r2"),
            **{"x-claude-code-agent-id": "a1", "x-claude-code-session-id": "s1"},
        )
        seen = backend.requests[-1]
    assert before <= seen.at <= backend.clock()
    assert (seen.agent_id, seen.session_id) == ("a1", "s1")
    # each tool call of the conversation's assistant messages: its name and its input's bytes as compact JSON
    assert seen.written == (("Agent", len('{"prompt":"pppppppppp"}')),) * 2


def test_a_real_parent_issues_a_wave_of_native_sub_agents_that_run_side_by_side(tmp_path: Path) -> None:
    """Two Agent calls in one message, on a model that takes 3 s: both sub-agents start at once, and only their
    model waits."""
    project, home = tmp_path / "project", tmp_path / "parent-home"
    (project / ".claude" / "agents").mkdir(parents=True)
    home.mkdir()
    (project / ".claude" / "agents" / "aether-builder.md").write_text(
        "---\nname: aether-builder\ndescription: Builds\ntools: Read\nmodel: kimi-k2.5\n---\nBUILDER-RULES\n"
    )
    calls = tuple(
        Call("Agent", {"description": f"Build {i}", "prompt": f"task {i}", "subagent_type": "aether-builder"})
        for i in (1, 2)
    )
    script = {PARENT: [Turn(calls=calls), Turn(follow=True)]}
    with LocalBackend(scripts=script, delays={"kimi-k2.5": 3.0}) as backend:
        run_parent(project, home, backend.url, [])
        messages = [r for r in backend.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]
    workers = [r for r in messages if r.model == "kimi-k2.5"]
    parent = [r for r in messages if r.model == PARENT]
    assert len({r.agent_id for r in workers}) == 2 and None not in {r.agent_id for r in workers}
    assert all("BUILDER-RULES" in r.system for r in workers)
    ran = [[t for t in ("task 1", "task 2") if any(t in said for said in r.conversation)] for r in workers]
    assert sorted(ran) == [["task 1"], ["task 2"]]
    starts = [r.at for r in workers]
    assert max(starts) - min(starts) < 1.5
    assert parent[-1].at - max(starts) >= 3.0  # the parent's last turn waited for the slow model's answers
    assert parent[1].at - parent[0].at < 3.0  # while its own model answered at once
    assert parent[-1].written == tuple(("Agent", len(json.dumps(c.tool_input, separators=(",", ":")))) for c in calls)


COLLECTOR = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("w")


@server.tool()
def collect(worker_id: str) -> str:
    """Collect a worker."""
    return f"collected {worker_id}"


server.run("stdio")
'''
DENY = """
import json, sys
event = json.load(sys.stdin)
name = event["tool_input"]["description"]
reason = f"{name} is already running. Collect it with:\\nmcp__w__collect " + json.dumps({"worker_id": name})
print(json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                         "permissionDecisionReason": reason}}))
"""


def test_a_real_parent_makes_the_calls_its_denials_name_in_one_message(tmp_path: Path) -> None:
    """A hook denies both Agent calls of one message, each reason naming its collecting call: the parent's next
    message makes both calls, and its final answer carries both results."""
    project, home = tmp_path / "project", tmp_path / "parent-home"
    (project / ".claude").mkdir(parents=True)
    home.mkdir()
    (tmp_path / "collector.py").write_text(COLLECTOR)
    (tmp_path / "deny.py").write_text(DENY)
    server = {"command": sys.executable, "args": [str(tmp_path / "collector.py")]}
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"w": server}}))
    hook = {"type": "command", "command": f"{sys.executable} {tmp_path / 'deny.py'}"}
    settings = {
        "enableAllProjectMcpServers": True,
        "hooks": {"PreToolUse": [{"matcher": "Task|Agent", "hooks": [hook]}]},
    }
    (project / ".claude" / "settings.local.json").write_text(json.dumps(settings))
    calls = tuple(Call("Agent", {"description": f"build-{i}", "prompt": "p", "subagent_type": "x"}) for i in "ab")
    with LocalBackend(scripts={PARENT: [Turn(calls=calls), Turn(follow=True)]}) as backend:
        final = run_parent(project, home, backend.url, ["--allowedTools", "mcp__w"])
        parent = [r for r in backend.requests if r.model == PARENT and "count_tokens" not in r.path]
    assert len(parent) == 3  # the wave, the collecting calls, the final answer
    assert "build-a is already running" in parent[1].conversation[-1]  # the denial reaches the model as its result
    assert "build-b is already running" in parent[1].conversation[-1]
    assert parent[2].written[2:] == (("mcp__w__collect", len('{"worker_id":"build-a"}')),) * 2
    assert "collected build-a" in final and "collected build-b" in final


def run_parent(project: Path, home: Path, endpoint: str, extra: list[str]) -> str:
    """`claude -p` as a parent on the backend; its final text."""
    (home / ".claude.json").write_text(json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR", "USER", "SHELL")}
    env |= {"HOME": str(home), "ANTHROPIC_BASE_URL": endpoint, "ANTHROPIC_AUTH_TOKEN": "sk-wave-test"}
    env |= {
        "ENABLE_TOOL_SEARCH": "false",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    cli = find_cli(parse_profile("{}", "none"), os.environ).path
    command = [cli, "-p", "--model", PARENT, "--output-format", "stream-json", "--verbose", "--max-turns", "6", *extra]
    done = subprocess.run(
        command, input="Build.", capture_output=True, text=True, env=env, cwd=project, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # sub-agents run in the background: the session may answer more than once; its last answer is its final one
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return str([e for e in events if e.get("type") == "result"][-1]["result"])
