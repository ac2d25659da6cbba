"""Routing at the wire: a real Claude Code session run through `aether-mcp run`, its own sub-agents on their
castes' models, each proven by a wire record in the spawn log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from helpers import (
    MASTER_KEY,
    WIRE_CASTES,
    WRAPPER,
    hand_over_ready,
    messages_of,
    pilot_until,
    run_aether,
    table_cells,
    wire_project,
    wire_records,
)
from textual.widgets import DataTable

from aether_mcp.adapters.top.app import ColonyApp, ConfirmCancel
from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL, ParentRun, run_parent
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import Call, LocalBackend, Recorded, Turn
from aether_mcp.workers.claude_cli import find_cli
from aether_mcp.workers.spec import ENV_ALLOWLIST

CASTE_MODELS = WIRE_CASTES
# A builder that may start sub-agents of its own (Aether's builders have no Agent tool; this one nests a watcher).
NESTING_BUILDER = (
    "---\nname: aether-builder\ndescription: Writes code test-first\ntools: Read, Agent\nmodel: sonnet\n---\n\n"
    "You are the Builder ant. BUILDER-RULES: write the failing test first, then the code.\n"
)


def nesting_project(project: Path, home: Path, endpoint: str) -> None:
    """helpers.wire_project, with a builder that may start sub-agents of its own (trusted to)."""
    wire_project(project, home, endpoint, DEMO_TOKEN)
    builder = project / ".claude" / "agents" / "ant" / "aether-builder.md"
    builder.write_text(NESTING_BUILDER)
    assert run_aether("trust", str(builder), cwd=project, env={**os.environ, "HOME": str(home)}).returncode == 0


def agent_call(agent: str, n: int) -> Call:
    return Call("Agent", {"description": f"{agent} {n}", "prompt": f"task {n} for {agent}", "subagent_type": agent})


def cli_path() -> str:
    return find_cli(parse_profile("{}", "none"), os.environ).path


def run_wrapped(project: Path, home: Path, endpoint: str, allow: str = "Agent") -> ParentRun:
    return run_parent(cli_path(), project, home, endpoint, wrapper=WRAPPER, allow=allow)


def requests_by_agent(messages: list[Recorded]) -> dict[str | None, set[str | None]]:
    """The models each conversation's requests reached the backend on, by agent id (None: a session's own)."""
    found: dict[str | None, set[str | None]] = {}
    for request in messages:
        found.setdefault(request.agent_id, set()).add(request.model)
    return found


def test_a_wrapped_sessions_sub_agents_run_on_their_castes_models_with_proof(tmp_path: Path) -> None:
    """4 aether-builder and 1 aether-scout calls in one message, one builder starting a nested aether-watcher: each
    sub-agent's requests reach the backend on its caste's model from the profile (not its agent file's `model:`
    line), the parent's on its own, no call is denied, and the spawn log holds a verified wire record of each."""
    project, home = tmp_path / "project", tmp_path / "home"
    calls = (*(agent_call("aether-builder", n) for n in range(1, 5)), agent_call("aether-scout", 5))
    scripts = {
        PARENT_MODEL: [Turn(calls=calls), Turn(follow=True)],
        "kimi-k2.5": [Turn(calls=(agent_call("aether-watcher", 6),)), Turn(follow=True)],
    }
    with LocalBackend(token=DEMO_TOKEN, scripts=scripts) as backend:
        nesting_project(project, home, backend.url)
        parent = run_wrapped(project, home, backend.url)
        messages = messages_of(backend)

    assert parent.exit_code == 0, parent.stderr
    assert parent.denied == []
    assert all(r.authorized for r in backend.requests)  # the real token reached the backend, never the key
    by_agent = requests_by_agent(messages)
    assert by_agent.pop(None) == {PARENT_MODEL}
    routed = sorted(next(iter(models)) or "" for models in by_agent.values())
    assert routed == sorted(["kimi-k2.5"] * 4 + ["glm-5", "minimax-2.5"]), by_agent
    watcher = next(r for r in messages if r.model == "minimax-2.5")
    assert "WATCHER-STEPS" in watcher.system

    records = wire_records(project)
    subagents = [r for r in records if r["agent_id"] is not None]
    assert sorted(r["caste"] for r in subagents) == ["builder"] * 4 + ["scout", "watcher"]
    assert all(r["routing_verified"] and r["status"] == "succeeded" for r in subagents), subagents
    assert all(r["model"] == CASTE_MODELS[r["caste"]] for r in subagents)
    # from its SubagentStart to its SubagentStop
    assert all(r["duration_s"] > 0 and r["started_at"] <= r["finished_at"] for r in subagents)
    (nested,) = [r for r in subagents if r["caste"] == "watcher"]
    builders = {r["agent_id"] for r in subagents if r["caste"] == "builder"}
    assert nested["parent_agent_id"] in builders
    for record in subagents:  # each was told apart by the SubagentStart hook, before its first request
        details = json.loads((project / ".aether" / "details" / f"{record['worker_id']}.json").read_text())
        assert details["routing_evidence"][0].startswith("told apart by Claude Code's SubagentStart hook")
    (session,) = [r for r in records if r["agent_id"] is None]
    assert session["caste"] == "session" and session["requests_by_model"] == {PARENT_MODEL: session["requests"]}


def test_through_the_real_litellm_proxy_each_sub_agent_names_its_deployment(
    tmp_path: Path, litellm_proxy: str, routed_backend: LocalBackend, second_backend: LocalBackend
) -> None:
    """The parent's own requests go to its endpoint; 2 builders and a scout go through LiteLLM, each on its
    caste's model, and each wire record names the deployment that served it."""
    project, home = tmp_path / "project", tmp_path / "home"
    calls = (agent_call("aether-builder", 1), agent_call("aether-builder", 2), agent_call("aether-scout", 3))
    before = (len(routed_backend.models_asked()), len(second_backend.models_asked()))
    with LocalBackend(token=DEMO_TOKEN, scripts={PARENT_MODEL: [Turn(calls=calls), Turn(follow=True)]}) as parent_end:
        wire_project(project, home, litellm_proxy, MASTER_KEY, {"builder": "kimi-k2.5", "scout": "glm-5"})
        parent = run_wrapped(project, home, parent_end.url)
        assert {r.model for r in messages_of(parent_end)} == {PARENT_MODEL}

    assert parent.exit_code == 0, parent.stderr
    assert sorted(routed_backend.models_asked()[before[0] :]) == ["kimi-k2.5", "kimi-k2.5"]
    assert second_backend.models_asked()[before[1] :] == ["glm-5"]
    subagents = [r for r in wire_records(project) if r["agent_id"] is not None]
    assert sorted(r["caste"] for r in subagents) == ["builder", "builder", "scout"]
    for record in subagents:
        model = record["model"]
        backend = routed_backend if model == "kimi-k2.5" else second_backend
        assert record["routing_verified"], record["routing_mismatches"]
        assert record["served_by"] == [f"deployment deployment-{model} (anthropic/{model} at {backend.url})"]


AGENT_SESSIONS = """
"$CLI" -p --agent aether-builder "build one" > one.out 2>&1 &
"$CLI" -p --agent aether-builder "build two" > two.out 2>&1 &
wait
"""


def test_sessions_started_as_a_caste_inside_the_wrapped_command_are_routed_by_their_prompt(tmp_path: Path) -> None:
    """A script (as Aether's dispatcher runs castes) starts two `claude -p --agent aether-builder` sessions:
    they carry no agent id, and each is told by its system prompt, so both reach the backend on the builder's
    model, with a verified wire record each."""
    project, home = tmp_path / "project", tmp_path / "home"
    with LocalBackend(token=DEMO_TOKEN) as backend:
        wire_project(project, home, backend.url, DEMO_TOKEN)
        env = {
            **{k: v for k, v in os.environ.items() if k in ENV_ALLOWLIST},
            "HOME": str(home),
            "CLI": cli_path(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANTHROPIC_BASE_URL": backend.url,
            "ANTHROPIC_AUTH_TOKEN": DEMO_TOKEN,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        done = subprocess.run(
            [*WRAPPER, "sh", "-c", AGENT_SESSIONS],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        messages = messages_of(backend)

    assert done.returncode == 0, done.stderr
    assert all("served-by kimi-k2.5" in (project / name).read_text() for name in ("one.out", "two.out"))
    assert {r.model for r in messages} == {"kimi-k2.5"} and len({r.session_id for r in messages}) == 2
    records = wire_records(project)
    assert sorted(r["caste"] for r in records) == ["builder", "builder"]
    assert all(r["routing_verified"] and r["agent_id"] is None for r in records)
    assert all(r["requests_by_asked_model"] == {"claude-sonnet-5-5": r["requests"]} for r in records)


def test_set_caste_model_between_two_waves_applies_to_the_next_one(tmp_path: Path) -> None:
    """The parent runs a wave of 2 builders, calls set_caste_model builder glm-5 on its session's server, then
    runs a second wave: the first wave's builders reach the backend on kimi-k2.5, the second's on glm-5, with no
    restart."""
    project, home = tmp_path / "project", tmp_path / "home"

    def wave(first: int) -> Turn:
        calls = [agent_call("aether-builder", n) for n in (first, first + 1)]
        return Turn(calls=tuple(Call(c.tool, {**c.tool_input, "run_in_background": False}) for c in calls))

    switch = Turn(tool="mcp__aether__set_caste_model", tool_input={"caste": "builder", "model": "glm-5"})
    look = Turn(tool="mcp__aether__get_caste_model", tool_input={"caste": "builder"})
    script = {PARENT_MODEL: [wave(1), switch, look, wave(3), Turn(text="done")]}
    project.mkdir()
    with LocalBackend(token=DEMO_TOKEN, scripts=script, before_answer=hand_over_ready(project)) as backend:
        project.rmdir()
        wire_project(project, home, backend.url, DEMO_TOKEN)
        parent = run_wrapped(project, home, backend.url, allow="Agent,mcp__aether")
        messages = messages_of(backend)

    assert parent.exit_code == 0, parent.stderr
    tasks = {n: [r.model for r in messages if r.agent_id and f"task {n} for" in r.conversation[0]] for n in range(1, 5)}
    assert tasks == {1: ["kimi-k2.5"], 2: ["kimi-k2.5"], 3: ["glm-5"], 4: ["glm-5"]}, tasks
    task_of = {
        r.agent_id: n for n in range(1, 5) for r in messages if r.agent_id and f"task {n} for" in r.conversation[0]
    }
    records = sorted((r for r in wire_records(project) if r["agent_id"]), key=lambda r: task_of[r["agent_id"]])
    assert [r["model"] for r in records] == ["kimi-k2.5", "kimi-k2.5", "glm-5", "glm-5"]
    assert [r["model_source"] for r in records] == ["profile", "profile", "override", "override"]
    (table,) = [result for result in parent.tool_results if "castes" in result]
    assert table["routing"] == "wire" and table["castes"][0]["model"] == "glm-5"  # the server knows its session


def test_doctor_follows_a_caste_through_the_installed_hook_to_its_route(tmp_path: Path) -> None:
    """doctor runs the SubagentStart hook install wrote against a session's own router, and says where a
    caste's sub-agent would go, and where the session's own requests would."""
    project, home = tmp_path / "project", tmp_path / "home"
    wire_project(project, home, "http://127.0.0.1:9", DEMO_TOKEN)
    done = run_aether("doctor", cwd=project, env={**os.environ, "HOME": str(home), "ANTHROPIC_BASE_URL": ""})
    lines = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert (
        "OK" in lines["run: a caste's route"]
        and "aether-builder, told apart by the SubagentStart hook, would go to kimi-k2.5 at http://127.0.0.1:9"
        in done.stdout
    )
    assert "(from the proxy of" in lines["run: the session's endpoint"]


def test_a_setting_that_would_send_requests_past_the_gateway_stops_the_session_first(tmp_path: Path) -> None:
    """A project's settings.json whose env sets ANTHROPIC_BASE_URL would replace the gateway in Claude Code, and
    every caste would run unrouted: run refuses, naming the file and the setting, and runs nothing."""
    project, home = tmp_path / "project", tmp_path / "home"
    wire_project(project, home, "http://127.0.0.1:9", DEMO_TOKEN)
    (project / ".claude" / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_BASE_URL": "http://x"}}))
    env = {**os.environ, "HOME": str(home), "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    done = run_aether("run", "--", "touch", "ran", cwd=project, env=env)
    assert done.returncode == 1 and not (project / "ran").exists()
    assert f"{project / '.claude' / 'settings.json'}: env ANTHROPIC_BASE_URL" in done.stderr
    doctor = run_aether("doctor", cwd=project, env=env)
    assert "run: settings" in doctor.stdout and doctor.returncode != 0


CASTE_CALL = json.dumps({"tool_name": "Agent", "tool_input": {"subagent_type": "aether-builder", "prompt": "p"}})


def test_the_sub_agent_hook_steps_aside_only_below_its_own_wrapped_session(tmp_path: Path) -> None:
    """Inside a wrapped session the PreToolUse hook install wrote lets a caste's Agent call through (the gateway
    routes it). Attacker: a project's settings can set the session's variables for Claude Code; pointed at a real
    session's gateway with its key, from outside that session, the hook still stops the call."""
    project, home = tmp_path / "project", tmp_path / "home"
    wire_project(project, home, "http://127.0.0.1:9", DEMO_TOKEN)
    settings = json.loads((project / ".claude" / "settings.local.json").read_text())
    installed = settings["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
    env = {**os.environ, "HOME": str(home), "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "HOOK": installed}
    inside = 'sh -c "$HOOK" > inside.json; env | grep ^AETHER_MCP_WIRE > wire.env; sleep 30'
    session = subprocess.Popen(
        [*WRAPPER, "sh", "-c", inside], cwd=project, env=env, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert session.stdin is not None
        session.stdin.write(CASTE_CALL.encode())
        session.stdin.close()
        deadline = time.monotonic() + 30
        while not (project / "wire.env").exists() or not (project / "wire.env").read_text():
            assert time.monotonic() < deadline and session.poll() is None
            time.sleep(0.1)
        stolen = dict(line.split("=", 1) for line in (project / "wire.env").read_text().split())
        outside = subprocess.run(
            ["/bin/sh", "-c", installed],
            input=CASTE_CALL,
            cwd=project,
            env={**env, **stolen},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        session.kill()
        session.wait()
    assert (project / "inside.json").read_text() == ""  # no opinion: the call goes ahead, to the gateway
    assert '"permissionDecision": "deny"' in outside.stdout


def test_a_caste_model_with_a_smaller_window_is_compacted_in_time(tmp_path: Path) -> None:
    """The builder's model has a 16,000-token window (model_metadata), far below what Claude Code assumes for the
    name it asks for. When its conversation outgrows it (a large file read), the gateway answers as Anthropic's
    API would ("prompt is too long"), Claude Code compacts the sub-agent's conversation and goes on, and the
    proof counts no refusal."""
    project, home = tmp_path / "project", tmp_path / "home"
    scripts = {
        PARENT_MODEL: [Turn(calls=(agent_call("aether-builder", 1),)), Turn(follow=True)],
        "kimi-k2.5": [Turn(tool="Read", tool_input={"file_path": str(project / "big.txt")})],
    }
    with LocalBackend(token=DEMO_TOKEN, scripts=scripts) as backend:
        wire_project(project, home, backend.url, DEMO_TOKEN)
        profile = project / "model-profiles.yaml"
        profile.write_text(profile.read_text().replace("context_window: 256000", "context_window: 16000"))
        run_aether("trust", str(profile), cwd=project, env={**os.environ, "HOME": str(home)})
        (project / "big.txt").write_text("".join(f"line {n}: the quick brown fox jumps over it\n" for n in range(1500)))
        parent = run_wrapped(project, home, backend.url)
        builder = [r for r in messages_of(backend) if r.agent_id is not None]

    assert parent.exit_code == 0, parent.stderr
    assert {r.model for r in builder} == {"kimi-k2.5"}
    assert any("<summary>" in said for r in builder for said in r.conversation)  # Claude Code compacted
    (record,) = [r for r in wire_records(project) if r["agent_id"] is not None]
    assert (record["status"], record["routing_verified"]) == ("succeeded", True), record["routing_mismatches"]
    details = json.loads((project / ".aether" / "details" / f"{record['worker_id']}.json").read_text())
    asked = [r for r in details["requests"] if r["compaction_asked"]]
    assert asked and all(r["status"] == 400 and r["refused"] is None for r in asked)


@pytest.mark.anyio
async def test_top_shows_a_wrapped_sessions_sub_agents_live(tmp_path: Path) -> None:
    """While a wave of two builders runs (their model takes 4 s), `aether-mcp top` shows each as running on the
    caste's model, then done and verified, beside the session's own conversation."""
    project, home = tmp_path / "project", tmp_path / "home"
    calls = (agent_call("aether-builder", 1), agent_call("aether-builder", 2))
    script = {PARENT_MODEL: [Turn(calls=calls), Turn(follow=True)]}
    finished: list[ParentRun] = []

    def builders() -> dict[str, dict[str, str]]:
        return {worker: row for worker, row in table_cells(app).items() if worker.startswith("builder-")}

    def all_builders(**cells: str) -> bool:
        rows = builders().values()
        return len(rows) == 2 and all(row[key] == value for row in rows for key, value in cells.items())

    with LocalBackend(token=DEMO_TOKEN, scripts=script, delays={"kimi-k2.5": 4.0}) as backend:
        wire_project(project, home, backend.url, DEMO_TOKEN)
        app = ColonyApp(project / ".aether", project)
        async with app.run_test(size=(160, 36)) as pilot, anyio.create_task_group() as group:

            async def parent() -> None:
                finished.append(await anyio.to_thread.run_sync(run_wrapped, project, home, backend.url))

            group.start_soon(parent)
            await pilot_until(pilot, lambda: all_builders(status="▶ running", model="kimi-k2.5"))
            table = app.query_one("#workers", DataTable)
            table.move_cursor(row=table.get_row_index(next(iter(builders()))))
            await pilot.press("c")  # Claude Code's own sub-agent: top says where to stop it, and asks nothing
            assert not isinstance(app.screen, ConfirmCancel)
            await pilot_until(pilot, lambda: all_builders(status="✓ done", verified="✓"), seconds=60)
            assert any(worker.startswith("session-") for worker in table_cells(app))
    assert finished and finished[0].exit_code == 0


def test_the_wrapped_command_never_holds_the_real_token(tmp_path: Path) -> None:
    """Attacker: anything the session runs (Claude Code's Bash, a hook, a script): its environment has the
    session's key where the token was. (The wrapper is kept from /proc as the server is: finding 26.)"""
    project, home = tmp_path / "project", tmp_path / "home"
    wire_project(project, home, "http://127.0.0.1:9", DEMO_TOKEN)
    secret = "sk-real-token-4d9a1c"
    env = {**os.environ, "HOME": str(home), "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    env.update({"ANTHROPIC_AUTH_TOKEN": secret, "ANTHROPIC_API_KEY": secret})
    done = run_aether("run", "--", "env", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout and secret not in done.stderr
    assert "ANTHROPIC_AUTH_TOKEN=aether-session-" in done.stdout and "ANTHROPIC_API_KEY" not in done.stdout


def test_the_exit_status_and_signals_are_the_commands_own(tmp_path: Path) -> None:
    """The wrapped command's exit status comes back as it is; a command killed by a signal ends the wrapper
    the same way; a SIGTERM sent to the wrapper reaches the command, which ends as it chooses."""
    project, home = tmp_path / "project", tmp_path / "home"
    wire_project(project, home, "http://127.0.0.1:9", DEMO_TOKEN)
    env = {**os.environ, "HOME": str(home), "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    assert run_aether("run", "--", "sh", "-c", "exit 7", cwd=project, env=env).returncode == 7
    assert run_aether("run", "--", "sh", "-c", "kill -KILL $$", cwd=project, env=env).returncode == -9
    missing = run_aether("run", "--", str(tmp_path / "no-such-command"), cwd=project, env=env)
    assert missing.returncode == 1 and "Error: Cannot run" in missing.stderr and "Traceback" not in missing.stderr
    trap = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done"
    wrapper = subprocess.Popen(
        [*WRAPPER, "sh", "-c", trap], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert wrapper.stdout is not None and wrapper.stdout.readline() == "ready\n"
        wrapper.terminate()
        assert wrapper.wait(timeout=30) == 3 and wrapper.stdout.read() == "got-term\n"
    finally:
        wrapper.kill()
        wrapper.wait()


@pytest.mark.anyio
async def test_what_the_gateway_guarantees_holds_for_a_wrapped_sessions_castes(tmp_path: Path) -> None:
    """A builder's sub-agent (told by its prompt) through a session's router: its route is rewritten to the
    caste's model, the body's rerouting options are refused, only Claude Code's routes pass, and its caste's
    budget ends it."""
    import httpx2

    from aether_mcp.private_files import user_config_dir
    from aether_mcp.profile.store import ProfileStore
    from aether_mcp.profile.trust import TrustStore
    from aether_mcp.session.router import MainRoute, SessionRouter
    from aether_mcp.workers.gateway import Gateway

    project, home = tmp_path / "project", tmp_path / "home"
    with LocalBackend(token=DEMO_TOKEN) as backend:
        wire_project(project, home, backend.url, DEMO_TOKEN)
        profile = project / "model-profiles.yaml"
        priced = "kimi-k2.5: {provider: kimi, context_window: 256000, input_cost_per_mtok: 1, output_cost_per_mtok: 2}"
        text = profile.read_text().replace("kimi-k2.5: {provider: kimi, context_window: 256000}", priced)
        profile.write_text(text + "workers:\n  castes:\n    builder:\n      max_tokens: 10\n")
        store = ProfileStore(profile, cwd=project, trust=TrustStore(user_config_dir({"HOME": str(home)})))
        store.trust(profile)
        main = MainRoute(backend.url, DEMO_TOKEN, "authorization", "the test")
        router = SessionRouter(store, main, on_start=lambda _: None, on_end=lambda _: None)
        gateway = Gateway(router, control=router.control)
        headers = {"authorization": f"Bearer {router.key}", "x-claude-code-agent-id": "a1", "anthropic-version": "1"}
        system = [
            {
                "type": "text",
                "text": "You are the Builder ant. BUILDER-RULES: write the failing test first, then the code.",
            }
        ]
        body = {
            "model": "claude-sonnet-5-5",
            "max_tokens": 5,
            "system": system,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with anyio.create_task_group() as group, httpx2.AsyncClient(timeout=30) as client:
            url = gateway.start(group)
            rerouted = await client.post(f"{url}/v1/messages", headers=headers, json={**body, "fallbacks": ["x"]})
            elsewhere = await client.get(f"{url}/key/generate", headers=headers)
            first = await client.post(f"{url}/v1/messages", headers=headers, json=body)
            spent = await client.post(f"{url}/v1/messages", headers=headers, json=body)
            another = await client.post(
                f"{url}/v1/messages", headers={**headers, "x-claude-code-agent-id": "a2"}, json=body
            )
            await gateway.close()
            group.cancel_scope.cancel()
        asked = messages_of(backend)

    assert rerouted.status_code == 400 and "fallbacks" in rerouted.json()["error"]["message"]
    assert elsewhere.status_code == 403
    assert first.status_code == 200 and first.json()["model"] == "kimi-k2.5"
    assert spent.status_code == 429 and "max_tokens 10" in spent.json()["error"]["message"]
    assert another.status_code == 200  # a budget is each sub-agent's own
    assert [r.model for r in asked] == ["kimi-k2.5"] * 2  # only these reached the backend, on the caste's model
    costs = [agent.lease.cost_usd() for agent in router.live()]
    assert len(costs) == 2 and all(cost is not None and cost > 0 for cost in costs)  # priced from model_metadata
