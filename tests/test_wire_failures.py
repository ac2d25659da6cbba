"""Routing at the wire when something fails: a caste's endpoint down or refusing its token, a sub-agent nobody
announced, two sessions side by side, a session's key used after it ended, and the gateway killed mid-answer.

Where what the user sees matters, the session is the real Claude Code CLI run through `aether-mcp run`; where a
test needs exact control of headers and keys, the wrapped command is a small Python client that sends
Anthropic-shaped requests the way Claude Code does."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from helpers import WRAPPER, messages_of, run_aether, wait_for, wire_records, write_aether_project

from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import Call, LocalBackend, Recorded, Turn
from aether_mcp.workers.claude_cli import find_cli
from aether_mcp.workers.spec import ENV_ALLOWLIST

BUILDER_MODEL = "kimi-k2.5"  # the builder's model in helpers.AETHER_PROFILE (its agent file says `sonnet`)
WRONG_TOKEN = "sk-wrong-proxy-token-3e8b1f"  # distinctive, so a leak is easy to find
REFUSED_KEY = "aether-mcp gateway: this key is not (or no longer) valid"
TIMEOUT_S = 60

# The wrapped command of the tests that need exact headers and keys. It writes what its environment holds,
# sends each planned request to ANTHROPIC_BASE_URL with ANTHROPIC_AUTH_TOKEN and Claude Code's headers, writes
# the answers, and, if the plan says so, stays until the test lets it go (so its session stays open meanwhile).
CLIENT = r"""
import http.client, json, os, sys, time
from pathlib import Path
from urllib.parse import urlsplit

plan = json.loads(Path(sys.argv[1]).read_text())

def write(path, data):
    part = Path(path + ".part")
    part.write_text(json.dumps(data))
    part.rename(path)

names = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "AETHER_MCP_WIRE", "AETHER_MCP_WIRE_KEY")
write(plan["info"], {name: os.environ.get(name) for name in names})
base = urlsplit(os.environ["ANTHROPIC_BASE_URL"])
answers = []
for request in plan["requests"]:
    body = {
        "model": request["model"],
        "max_tokens": 32,
        "system": [{"type": "text", "text": request["system"]}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": request["task"]}]}],
    }
    headers = {
        "authorization": "Bearer " + os.environ["ANTHROPIC_AUTH_TOKEN"],
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "user-agent": "claude-cli/2.1.0 (external, cli)",
        "x-app": "cli",
        "x-claude-code-session-id": request["session"],
    }
    if request.get("agent"):
        headers["x-claude-code-agent-id"] = request["agent"]
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=20)
    connection.request("POST", "/v1/messages?beta=true", json.dumps(body), headers)
    answer = connection.getresponse()
    answers.append({"status": answer.status, "body": json.loads(answer.read())})
    connection.close()
write(plan["answers"], answers)
if plan.get("hold"):
    deadline = time.monotonic() + 60
    while not Path(plan["hold"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # paces the look for the test's go-ahead: the file is what ends the wait
"""


# --- the project and the session -----------------------------------------------------------------------------


def project_at(tmp_path: Path, endpoint: str, token: str = DEMO_TOKEN, hooks: bool = False) -> tuple[Path, Path]:
    """An Aether-shaped project (its profile's proxy `endpoint` with `token`, trusted) in a trusted HOME; with
    `hooks`, installed as a user would (the aether-mcp server and the SubagentStart/SubagentStop hooks)."""
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir(exist_ok=True)  # the HOME the `isolated` fixture set: the profile is trusted there
    write_aether_project(project, endpoint, token=token)
    if hooks:
        installed = run_aether("install", "--trust", cwd=project, env={**os.environ, "HOME": str(home)})
        assert installed.returncode == 0, installed.stderr
    (home / ".claude.json").write_text(json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}))
    return project, home


def session_env(home: Path, endpoint: str) -> dict[str, str]:
    """The environment a user runs `aether-mcp run` in, as the demo's parent has it: the session's own endpoint
    and token, aether-mcp on PATH, no retries."""
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWLIST}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(home),
            "ANTHROPIC_BASE_URL": endpoint,
            "ANTHROPIC_AUTH_TOKEN": DEMO_TOKEN,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
    )
    return env


def claude_command(prompt: str, allow: str | None = None) -> list[str]:
    cli = find_cli(parse_profile("{}", "none"), os.environ).path
    command = [*WRAPPER, cli, "-p", prompt, "--model", PARENT_MODEL, "--output-format", "stream-json", "--verbose"]
    return command + (["--allowedTools", allow] if allow else [])


def run_claude(project: Path, home: Path, endpoint: str, allow: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        claude_command("Start the builder.", allow),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=session_env(home, endpoint),
        cwd=project,
        timeout=120,
        check=False,
    )


def client_plan(folder: Path, requests: list[dict[str, str]], hold: bool = False) -> tuple[list[str], Path]:
    """The wrapped client's command, and the folder where it writes `info.json` and `answers.json` (and where
    `go` lets a holding client end)."""
    folder.mkdir()
    (folder / "client.py").write_text(CLIENT)
    plan = {
        "info": str(folder / "info.json"),
        "answers": str(folder / "answers.json"),
        "requests": requests,
        "hold": str(folder / "go") if hold else None,
    }
    (folder / "plan.json").write_text(json.dumps(plan))
    return [*WRAPPER, sys.executable, str(folder / "client.py"), str(folder / "plan.json")], folder


def start(command: list[str], project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def eventually(predicate: Any, seconds: float = TIMEOUT_S) -> bool:
    return anyio.run(wait_for, predicate, seconds, 0.05)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def post(url: str, key: str, model: str = PARENT_MODEL) -> tuple[int, dict[str, Any]]:
    """One Anthropic-shaped request to `url` with `key` as its credential, as Claude Code sends it."""
    where = urlsplit(url)
    body = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": "hello"}]}
    headers = {
        "authorization": f"Bearer {key}",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "x-claude-code-session-id": "test-probe",
    }
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=20)
    try:
        connection.request("POST", "/v1/messages?beta=true", json.dumps(body), headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def refuses_connections(url: str) -> bool:
    where = urlsplit(url)
    try:
        socket.create_connection((where.hostname, where.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def dead_endpoint() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def the_record(project: Path, **match: Any) -> dict[str, Any]:
    """The one wire record in the spawn log that has `match`'s values: a conversation is recorded once."""
    found = [r for r in wire_records(project) if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} wire records of {match}: {[(r['worker_id'], r['status']) for r in found]}"
    return found[0]


def start_builder() -> dict[str, list[Turn]]:
    """The parent's script: one aether-builder sub-agent, then (by default) an answer that repeats every tool
    result and task notification it got."""
    call = Call(
        "Agent", {"description": "build 1", "prompt": "task 1 for the builder", "subagent_type": "aether-builder"}
    )
    return {PARENT_MODEL: [Turn(calls=(call,))]}


def gone(pid: int) -> bool:
    """The process has ended (a zombie no one has reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


# --- the tests -----------------------------------------------------------------------------------------------


def test_a_castes_endpoint_down_reaches_claude_code_as_an_error_naming_caste_model_and_fix(tmp_path: Path) -> None:
    """The profile's proxy (the builder's endpoint) is a dead port, the session's own endpoint is live: the
    builder sub-agent's request gets the gateway's error naming the caste, its model and the fix; Claude Code
    shows it and hands it to the parent; no request of the builder reaches the session's endpoint instead; and
    the builder's wire record is failed and not verified."""
    dead = dead_endpoint()
    with LocalBackend(token=DEMO_TOKEN, scripts=start_builder()) as backend:
        project, home = project_at(tmp_path, dead, hooks=True)
        done = run_claude(project, home, backend.url, allow="Agent")
        messages = messages_of(backend)

    said = f"aether-mcp gateway: the builder caste's (model {BUILDER_MODEL}) endpoint {dead} did not answer"
    fix = "Fix: start it (or point the profile's proxy.endpoint at one that runs)"
    assert done.returncode == 0, done.stderr
    assert said in done.stdout and fix in done.stdout, done.stdout[-3000:]
    parent = [r for r in messages if r.agent_id is None]
    assert any(said in "\n".join(r.conversation) for r in parent), "the parent was never told why the builder failed"
    assert all(r.model == PARENT_MODEL for r in parent)
    assert [r for r in messages if r.agent_id is not None] == []  # not passed on to the session's endpoint instead
    assert all(r.authorized for r in backend.requests)

    builder = the_record(project, caste="builder")
    # Claude Code sends no SubagentStop for a sub-agent an API error ended: it ends with the session, unanswered.
    assert builder["model"] == BUILDER_MODEL and builder["status"] == "failed"
    assert builder["routing_verified"] is False
    assert {m["code"] for m in builder["routing_mismatches"]} >= {"refused"}


def test_a_wrong_token_becomes_the_gateways_error_with_the_fix_and_never_shows(tmp_path: Path) -> None:
    """The profile's proxy token is not the one the endpoint takes: the endpoint's 401 reaches Claude Code as the
    gateway's error (whose token, for which caste and model, and the fix), and the wrong token appears in no
    output, log or transcript."""
    with LocalBackend(token=DEMO_TOKEN, scripts=start_builder()) as backend:
        project, home = project_at(tmp_path, backend.url, token=WRONG_TOKEN, hooks=True)
        done = run_claude(project, home, backend.url, allow="Agent")
        messages = messages_of(backend)

    said = (
        f"aether-mcp gateway: {backend.url} refused the token aether-mcp holds for the builder caste's "
        f"(model {BUILDER_MODEL}) requests (HTTP 401). Fix: set the right proxy.auth_token"
    )
    assert done.returncode == 0, done.stderr
    assert said in done.stdout, done.stdout[-3000:]
    builders = [r for r in messages if r.agent_id is not None]
    assert builders and all(r.model == BUILDER_MODEL and not r.authorized for r in builders)  # the wrong token sent
    assert all(r.authorized for r in messages if r.agent_id is None)  # the session's own token, right
    builder = the_record(project, caste="builder")
    assert builder["status"] == "failed" and builder["routing_verified"] is False

    assert WRONG_TOKEN not in done.stdout + done.stderr
    profile = project / "model-profiles.yaml"
    written = [p for folder in (project, home) for p in folder.rglob("*") if p.is_file() and p != profile]
    leaked = [p for p in written if WRONG_TOKEN.encode() in p.read_bytes()]
    assert leaked == []
    assert any(p.suffix == ".jsonl" for p in (home / ".claude" / "projects").rglob("*"))  # transcripts were looked at


def test_an_unannounced_agent_matching_no_agent_file_passes_as_asked_and_is_recorded(tmp_path: Path) -> None:
    """A request with an agent id no hook announced and a system prompt that is no agent file's goes upstream on
    the model it asked for, and leaves a wire record of caste `unattributed`; one whose system prompt holds the
    builder's agent file is told apart by it and routed to the builder's model."""
    with LocalBackend(token=DEMO_TOKEN) as backend:
        project, home = project_at(tmp_path, backend.url)
        unknown = {
            "session": "session-3",
            "agent": "a-unknown-0001",
            "model": "claude-haiku-4-5",
            "system": "You are a helpful assistant with no agent file of its own.",
            "task": "summarize the notes",
        }
        builder_body = "You are the Builder ant. BUILDER-RULES: write the failing test first, then the code."
        prompted = {**unknown, "agent": "a-unknown-0002", "system": f"You are Claude Code.\n\n{builder_body}\n"}
        command, folder = client_plan(tmp_path / "client", [unknown, prompted])
        done = subprocess.run(
            command,
            cwd=project,
            env=session_env(home, backend.url),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        messages = messages_of(backend)

    assert done.returncode == 0, done.stderr
    answers = read_json(folder / "answers.json")
    assert [a["status"] for a in answers] == [200, 200], answers
    assert answers[0]["body"]["model"] == "claude-haiku-4-5"
    seen = {r.agent_id: r for r in messages}
    assert seen["a-unknown-0001"].model == "claude-haiku-4-5" and seen["a-unknown-0001"].authorized
    assert seen["a-unknown-0002"].model == BUILDER_MODEL  # prompt matching works: the first one matched nothing

    unattributed = the_record(project, agent_id="a-unknown-0001")
    assert unattributed["caste"] == "unattributed"
    assert unattributed["model_source"] == "asked"  # no caste's model: passed on as it asked
    assert unattributed["requests_by_model"] == {"claude-haiku-4-5": 1}
    assert unattributed["session_id"] == "session-3"
    assert the_record(project, agent_id="a-unknown-0002")["caste"] == "builder"
    assert len(wire_records(project)) == 2


def test_two_sessions_at_once_have_their_own_gateways_and_keys(tmp_path: Path) -> None:
    """Two wrapped sessions run side by side in one project: each has its own gateway and key, its key works at
    its gateway, and each one's key is refused (401) at the other's gateway, with nothing sent upstream."""
    with LocalBackend(token=DEMO_TOKEN) as backend:
        project, home = project_at(tmp_path, backend.url)
        env = session_env(home, backend.url)
        sessions = []
        try:
            for name in ("one", "two"):
                request = {
                    "session": f"session-{name}",
                    "model": PARENT_MODEL,
                    "system": "You are Claude Code.",
                    "task": "hi",
                }
                command, folder = client_plan(tmp_path / name, [request], hold=True)
                sessions.append((start(command, project, env), folder))
            assert eventually(lambda: all((f / "answers.json").exists() for _, f in sessions)), [
                p.poll() for p, _ in sessions
            ]
            (_, one_dir), (_, two_dir) = sessions
            info_one, info_two = read_json(one_dir / "info.json"), read_json(two_dir / "info.json")
            upstream_before = len(messages_of(backend))
            crossed = [
                post(info_two["ANTHROPIC_BASE_URL"], info_one["ANTHROPIC_AUTH_TOKEN"]),
                post(info_one["ANTHROPIC_BASE_URL"], info_two["ANTHROPIC_AUTH_TOKEN"]),
            ]
            upstream_after = len(messages_of(backend))
            for _, folder in sessions:
                (folder / "go").touch()
            outputs = [process.communicate(timeout=TIMEOUT_S) for process, _ in sessions]
        finally:
            for process, _ in sessions:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)

    assert [p.returncode for p, _ in sessions] == [0, 0], outputs
    for info in (info_one, info_two):
        assert (
            info["ANTHROPIC_BASE_URL"] == info["AETHER_MCP_WIRE"]
            and urlsplit(info["AETHER_MCP_WIRE"]).hostname == "127.0.0.1"
        )
        assert info["ANTHROPIC_AUTH_TOKEN"] == info["AETHER_MCP_WIRE_KEY"] != DEMO_TOKEN
        assert info["ANTHROPIC_API_KEY"] is None
    assert info_one["AETHER_MCP_WIRE"] != info_two["AETHER_MCP_WIRE"]
    assert info_one["AETHER_MCP_WIRE_KEY"] != info_two["AETHER_MCP_WIRE_KEY"]
    assert [read_json(f / "answers.json")[0]["status"] for _, f in sessions] == [200, 200]
    for status, answer in crossed:
        assert status == 401 and answer["error"]["message"] == REFUSED_KEY, answer
    assert upstream_after == upstream_before == 2
    assert all(r.authorized for r in backend.requests)
    assert sorted(r["session_id"] for r in wire_records(project)) == ["session-one", "session-two"]


def test_a_key_reused_after_its_session_ended_is_refused(tmp_path: Path) -> None:
    """A session ends: its gateway's port answers no more, and its key is refused (401) by a later session's
    gateway, which takes its own key."""
    with LocalBackend(token=DEMO_TOKEN) as backend:
        project, home = project_at(tmp_path, backend.url)
        env = session_env(home, backend.url)
        request = {"session": "session-old", "model": PARENT_MODEL, "system": "You are Claude Code.", "task": "hi"}
        command, old_dir = client_plan(tmp_path / "old", [request])
        first = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        assert first.returncode == 0, first.stderr
        old = read_json(old_dir / "info.json")
        assert read_json(old_dir / "answers.json")[0]["status"] == 200  # the key worked while its session lived
        assert refuses_connections(old["AETHER_MCP_WIRE"])

        command, new_dir = client_plan(tmp_path / "new", [], hold=True)
        later = start(command, project, env)
        try:
            assert eventually((new_dir / "answers.json").exists), later.poll()
            new = read_json(new_dir / "info.json")
            before = len(messages_of(backend))
            reused = post(new["AETHER_MCP_WIRE"], old["AETHER_MCP_WIRE_KEY"])
            after = len(messages_of(backend))
            own = post(new["AETHER_MCP_WIRE"], new["AETHER_MCP_WIRE_KEY"])
            (new_dir / "go").touch()
            later.communicate(timeout=TIMEOUT_S)
        finally:
            if later.poll() is None:
                later.kill()
                later.wait(timeout=10)

    assert later.returncode == 0
    assert new["AETHER_MCP_WIRE_KEY"] != old["AETHER_MCP_WIRE_KEY"]
    status, answer = reused
    assert status == 401 and answer["error"]["message"] == REFUSED_KEY, answer
    assert after == before  # nothing of the old key's request went upstream
    assert own[0] == 200, own  # the later gateway works: it is the key it refused
    assert all(r.authorized for r in backend.requests)


def test_the_gateway_killed_mid_answer_fails_claude_code_and_nothing_bypasses_it(tmp_path: Path) -> None:
    """`aether-mcp run` is killed (SIGKILL) while the backend holds its answer to the wrapped `claude -p`: Claude
    Code's request fails where its user sees it, and the backend never gets a request past the gateway: every
    request it saw carried the real token and came while the gateway lived."""
    arrived, release = threading.Event(), threading.Event()

    def hold(request: Recorded) -> None:
        if request.model == PARENT_MODEL:
            arrived.set()
            release.wait(TIMEOUT_S)

    with LocalBackend(token=DEMO_TOKEN, before_answer=hold) as backend:
        project, home = project_at(tmp_path, backend.url)
        wrapper = start(claude_command("Say hello."), project, session_env(home, backend.url))
        claude: list[int] = []
        try:
            assert eventually(arrived.is_set), wrapper.poll()
            claude = children_of(wrapper.pid)
            assert len(claude) == 1, claude
            wrapper.send_signal(signal.SIGKILL)
            wrapper.wait(timeout=10)
            killed_at = backend.clock()
            release.set()
            out, _ = wrapper.communicate(timeout=TIMEOUT_S)  # Claude Code holds the pipes: their end is its end
            assert eventually(lambda: gone(claude[0]))
            seen = list(backend.requests)
        finally:
            release.set()
            for pid in claude:
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
            if wrapper.poll() is None:
                wrapper.kill()
                wrapper.wait(timeout=10)

    assert wrapper.returncode == -signal.SIGKILL
    results = [e for e in map(_event, out.splitlines()) if e.get("type") == "result"]
    assert results and results[-1]["is_error"] and "API Error" in results[-1]["result"], out[-3000:]
    assert "served-by" not in out  # the answer never came
    assert [r for r in seen if r.model == PARENT_MODEL]
    assert all(r.authorized for r in seen)  # the real token: each came through the gateway
    assert all(r.at < killed_at for r in seen), [(r.path, r.at, killed_at) for r in seen]


def _event(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
