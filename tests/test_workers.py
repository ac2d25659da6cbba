"""One worker's pieces: the command, the environment, the stream, the proof, the caste settings."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from aether_mcp.errors import AetherError, sentences
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.profile.worker_settings import settings_for
from aether_mcp.workers import proof
from aether_mcp.workers.claude_cli import ClaudeCli, CliNotFoundError, find_cli
from aether_mcp.workers.leases import lease_for
from aether_mcp.workers.preflight import Deployment, Preflight
from aether_mcp.workers.secrets import worker_secrets
from aether_mcp.workers.spec import WorkerSpec, build_command, build_env, write_worker_files
from aether_mcp.workers.stream import StreamSummary
from aether_mcp.workers.wire import KeyRouter, Lease, RequestRecord
from aether_mcp.workers.worker import Worker, WorkerStateError
from aether_mcp.workers.worktree import TreeOutcome, Worktree

PROFILE = """\
worker_models: {builder: kimi-k2.5, scout: glm-5, chronicler: glm-5, oracle: glm-5}
proxy: {endpoint: "http://127.0.0.1:4000", auth_token: sk-secret-token}
workers:
  env_passthrough: [HTTPS_PROXY]
  defaults: {max_turns: 7}
  castes:
    oracle: {endpoint: "http://127.0.0.1:5000", auth_token: sk-other-token, timeout_s: 30}
"""


def spec_for(caste: str, model: str | None = "kimi-k2.5", profile_text: str = PROFILE) -> WorkerSpec:
    profile = parse_profile(profile_text, "p.yaml", {})
    return WorkerSpec(
        worker_id="w-1",
        caste=caste,
        task="do it",
        model=model,
        model_source="profile",
        cwd=Path("/tmp"),
        server_dir=Path("/tmp/project"),
        settings=settings_for(profile, caste),
        cli=ClaudeCli("/usr/bin/claude", "claude on PATH"),
        transcript_path=Path("/tmp/t.jsonl"),
        env_passthrough=profile.workers.env_passthrough,
    )


PARENT_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/home/u",
    "LC_ALL": "C.UTF-8",
    "ANTHROPIC_API_KEY": "sk-parent-key",
    "ANTHROPIC_MODEL": "parent-model",
    "AWS_SECRET_ACCESS_KEY": "nope",
    "HTTPS_PROXY": "http://corp:3128",
}


GATEWAY = "http://127.0.0.1:4999"


def test_environment_is_built_from_an_allowlist() -> None:
    env = build_env(spec_for("builder").placed(gateway_url=GATEWAY), PARENT_ENV, key="aether-own-key")
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://corp:3128",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_BASE_URL": GATEWAY,
        "ANTHROPIC_AUTH_TOKEN": "aether-own-key",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "API_TIMEOUT_MS": "120000",
        "ANTHROPIC_MODEL": "kimi-k2.5",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "kimi-k2.5",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "kimi-k2.5",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "kimi-k2.5",
        "ANTHROPIC_SMALL_FAST_MODEL": "kimi-k2.5",
        "CLAUDE_CODE_SUBAGENT_MODEL": "kimi-k2.5",
    }


def test_a_proxied_worker_has_no_environment_without_its_gateway_key() -> None:
    """The real token never stands in for a missing key: without one there is nothing to start."""
    with pytest.raises(AetherError, match="no gateway key"):
        build_env(spec_for("builder"), PARENT_ENV)
    with pytest.raises(AetherError, match="no gateway key"):
        build_env(spec_for("builder").placed(gateway_url=GATEWAY), PARENT_ENV)


def test_a_caste_with_its_own_endpoint_uses_its_own_token() -> None:
    lease = lease_for(spec_for("oracle", "glm-5"), {})
    assert (lease.upstream, lease.token) == ("http://127.0.0.1:5000", "sk-other-token")
    assert spec_for("oracle").settings.timeout_s == 30


def test_without_a_proxy_the_cli_keeps_its_own_backend() -> None:
    env = build_env(spec_for("builder", "sonnet", "worker_models: {builder: sonnet}\n"), PARENT_ENV)
    assert "ANTHROPIC_BASE_URL" not in env and "ANTHROPIC_API_KEY" not in env
    assert env["ANTHROPIC_MODEL"] == "sonnet"
    assert "ANTHROPIC_DEFAULT_HAIKU_MODEL" not in env


def test_the_command_carries_model_and_settings_but_no_secret() -> None:
    command = build_command(spec_for("scout", "glm-5"))
    assert command[:5] == ["/usr/bin/claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert command[command.index("--model") + 1] == "glm-5"
    assert command[command.index("--permission-mode") + 1] == "dontAsk"
    assert command[command.index("--max-turns") + 1] == "7"
    assert "Edit" in command[command.index("--disallowedTools") + 1].split(",")
    assert "--strict-mcp-config" in command
    assert command[command.index("--mcp-config") + 1].startswith("/tmp/project/.aether/workers/mcp-")
    # the directory's own settings are not read; the routing rides on top of the user's
    assert command[command.index("--setting-sources") + 1] == "user"
    routing = json.loads(command[command.index("--settings") + 1])["env"]
    assert (routing["ANTHROPIC_BASE_URL"], routing["ANTHROPIC_MODEL"]) == ("http://127.0.0.1:4000", "glm-5")
    assert "do it" not in command  # the task goes on stdin
    assert not any("sk-secret-token" in part for part in command)


def test_mcp_servers_go_in_a_private_file_never_on_the_command_line(tmp_path: Path) -> None:
    text = PROFILE + "    scout: {mcp_servers: {docs: {command: docs-server, env: {DOCS_KEY: sk-docs-secret-99}}}}\n"
    spec = replace(spec_for("scout", "glm-5", text), server_dir=tmp_path)
    write_worker_files(spec)
    command = build_command(spec)
    path = Path(command[command.index("--mcp-config") + 1])
    assert json.loads(path.read_text())["mcpServers"]["docs"]["env"] == {"DOCS_KEY": "sk-docs-secret-99"}
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert not any("sk-docs-secret-99" in part for part in command)
    assert "sk-docs-secret-99" in worker_secrets(spec.settings, {})  # and redacted from what the worker says


@pytest.mark.parametrize(
    ("caste", "mode", "may_edit", "may_bash"),
    [
        ("builder", "acceptEdits", True, True),
        ("watcher", "dontAsk", False, True),
        ("scout", "dontAsk", False, False),
        ("colonizer", "dontAsk", False, False),
        ("oracle", "dontAsk", False, False),
        ("architect", "dontAsk", False, False),
        ("route_setter", "dontAsk", False, False),
        ("archaeologist", "dontAsk", False, False),
        ("some_new_caste", "dontAsk", False, False),
    ],
)
def test_shipped_settings_follow_least_privilege(caste: str, mode: str, may_edit: bool, may_bash: bool) -> None:
    profile = parse_profile(f"worker_models: {{{caste}: m}}\n", "p.yaml", {})
    settings = settings_for(profile, caste)
    assert settings.permission_mode == mode
    assert ("Edit" in settings.allowed_tools) is may_edit
    assert ("Edit" in settings.disallowed_tools) is not may_edit
    assert ("Bash" in settings.allowed_tools) is may_bash
    assert "Agent" in settings.disallowed_tools


def test_chronicler_may_edit_documentation_only() -> None:
    settings = settings_for(parse_profile("worker_models: {chronicler: m}\n", "p.yaml", {}), "chronicler")
    assert "Edit(**/*.md)" in settings.allowed_tools and "Edit" not in settings.allowed_tools
    assert settings.permission_mode == "dontAsk"


def test_cli_choice_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    profile = parse_profile(f"worker_models: {{a: b}}\nworkers: {{claude_cli: {fake}}}\n", "p.yaml", {})
    assert find_cli(profile, {"AETHER_CLAUDE_CLI": str(fake)}).rule == "AETHER_CLAUDE_CLI"
    assert find_cli(profile, {}).rule == "profile workers.claude_cli"
    bare = parse_profile("worker_models: {a: b}\n", "p.yaml", {})
    assert find_cli(bare, {"PATH": str(tmp_path)}) == ClaudeCli(str(fake), "claude on PATH")
    assert find_cli(bare, {"PATH": "/nonexistent"}).rule == "claude-agent-sdk bundle"
    monkeypatch.setattr("aether_mcp.workers.claude_cli._bundled_cli", lambda: None)
    with pytest.raises(CliNotFoundError, match="No Claude Code CLI found"):
        find_cli(bare, {"PATH": "/nonexistent"})
    with pytest.raises(CliNotFoundError, match="AETHER_CLAUDE_CLI"):
        find_cli(bare, {"AETHER_CLAUDE_CLI": "/no/such/claude"})


def stream(*events: dict) -> StreamSummary:
    summary = StreamSummary()
    for event in events:
        summary.feed(json.dumps(event))
    return summary


INIT = {"type": "system", "subtype": "init", "model": "kimi-k2.5", "session_id": "s1"}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "done",
    "num_turns": 2,
    "total_cost_usd": 0.01,
    "usage": {"input_tokens": 10, "output_tokens": 3, "service_tier": "standard"},
    "modelUsage": {"kimi-k2.5": {}},
    "session_id": "s1",
}


def answer(model: str, tool: str | None = None) -> dict:
    content = [{"type": "tool_use", "name": tool, "input": {}}] if tool else [{"type": "text", "text": "hi"}]
    return {"type": "assistant", "message": {"model": model, "content": content}, "parent_tool_use_id": None}


def test_stream_summary_reads_every_model_named() -> None:
    summary = stream(INIT, answer("kimi-k2.5", tool="Read"), answer("kimi-k2.5"), RESULT)
    summary.feed("not json at all")
    assert summary.models_reported() == ["kimi-k2.5"]
    assert (summary.turns, summary.last_tool, summary.num_turns, summary.result_text) == (2, "Read", 2, "done")
    assert summary.usage == {"input_tokens": 10, "output_tokens": 3}
    assert summary.malformed_lines == 1


def test_proof_verifies_only_what_the_backend_answered() -> None:
    verdict = proof.judge("kimi-k2.5", stream(INIT, answer("kimi-k2.5"), RESULT), Preflight(True, "preflight ok"))
    assert verdict.verified and verdict.evidence[-1] == "routing verified"
    # init and modelUsage alone only repeat the request
    unanswered = proof.judge("kimi-k2.5", stream(INIT, RESULT), Preflight(True, "preflight ok"))
    assert not unanswered.verified
    assert [m.code for m in unanswered.mismatches] == ["never_answered"]


def test_proof_catches_a_backend_that_answers_as_another_model() -> None:
    verdict = proof.judge("kimi-k2.5", stream(INIT, answer("glm-5"), RESULT), Preflight(True, "preflight ok"))
    assert not verdict.verified
    assert [(m.code, m.asked, m.seen) for m in verdict.mismatches] == [("other_model", "kimi-k2.5", "glm-5")]
    assert verdict.problem == verdict.mismatches[0].message == "asked for kimi-k2.5, but the stream names glm-5"
    assert "backend answered as glm-5" in verdict.evidence


def test_proof_needs_a_confirmed_preflight_when_there_is_a_proxy() -> None:
    verdict = proof.judge("kimi-k2.5", stream(INIT, answer("kimi-k2.5"), RESULT), Preflight(False, "cannot tell"))
    assert not verdict.verified and [m.code for m in verdict.mismatches] == ["proxy_unconfirmed"]


@pytest.mark.parametrize(
    ("assigned", "reported", "same"),
    [
        ("sonnet", "claude-sonnet-4-5-20250929", True),
        ("opus", "claude-opus-4-1-20250805", True),
        ("haiku", "claude-3-5-haiku-20241022", True),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", True),
        ("sonnet", "claude-opus-4-1", False),
        ("glm-5", "glm-5-turbo", False),
        ("kimi-k2.5", "kimi-k2.5", True),
    ],
)
def test_aliases_and_dated_ids(assigned: str, reported: str, same: bool) -> None:
    assert (proof.same_model(assigned, reported) is not None) is same


def test_the_clis_own_error_messages_are_not_answers() -> None:
    summary = stream(INIT, answer("<synthetic>"), RESULT)
    summary.feed("{not json")
    assert summary.answered_models == [] and summary.synthetic_messages == 1
    verdict = proof.judge("kimi-k2.5", summary, None)
    assert not verdict.verified
    assert "1 message(s) written by the CLI itself (an error, not an answer)" in verdict.evidence
    assert "1 stream line(s) were not JSON and were skipped" in verdict.evidence


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (
            ("The backend said: Invalid API key.", "Check the token"),
            "The backend said: Invalid API key. Check the token.",
        ),
        (("It failed", "Try again."), "It failed. Try again."),
        (("Why?", None, "", "  "), "Why?"),
        ((None,), ""),
    ],
)
def test_sentences_end_in_one_full_stop(parts: tuple[str | None, ...], joined: str) -> None:
    assert sentences(*parts) == joined


def test_worker_files_are_never_seen_half_written(tmp_path: Path) -> None:
    """Workers starting side by side share their content-named files: a reader must always see all of one.

    Truncating and rewriting the file in place let a CLI starting beside another spawn read it empty
    ("Invalid --agents configuration: JSON Parse error: Unexpected EOF"); replacing it whole changed it under
    the CLI's feet ("--agents file changed while it was read"). A file that is there stays as it is."""
    import threading

    spec = replace(spec_for("scout", "glm-5"), server_dir=tmp_path)
    write_worker_files(spec)
    path = Path(build_command(spec)[build_command(spec).index("--mcp-config") + 1])
    first = path.stat()
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3000):
            write_worker_files(spec)
    finally:
        done.set()
        reader.join()
    assert len(seen) > 100
    assert all(json.loads(text) == {"mcpServers": {}} for text in seen)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    path.write_text("{")  # a damaged one is made whole again
    write_worker_files(spec)
    assert json.loads(path.read_text()) == {"mcpServers": {}} and stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("timed_out", "over_budget", "failed", "status"),
    [
        (True, True, True, "timed_out"),
        (True, False, False, "timed_out"),
        (False, True, True, "budget_exceeded"),
        (False, True, False, "budget_exceeded"),
        (False, False, True, "failed"),
        (False, False, False, "succeeded"),
    ],
)
def test_how_a_worker_ended_follows_one_precedence(
    timed_out: bool, over_budget: bool, failed: bool, status: str
) -> None:
    """A timeout explains everything after it; a spent budget explains the failure it caused; only a run with no
    failure succeeded."""
    assert proof.outcome_status(timed_out=timed_out, over_budget=over_budget, failed=failed) == status


def settlement(status: str = "succeeded") -> proof.Settlement:
    verdict = proof.RoutingVerdict(True, ["routing verified"])
    return proof.Settlement(status, None, "done", None, verdict, ["kimi-k2.5"], 1.0, 1, None, None, "s-1")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_worker_moves_only_from_where_each_step_allows() -> None:
    worker = Worker(spec_for("builder"), None, "me")
    assert worker.record().status == "queued"
    with pytest.raises(WorkerStateError, match="from queued to succeeded"):
        worker.settle(settlement())
    worker.start(warm=False, key=None)
    worker.settle(settlement())
    record = worker.record()
    assert (record.status, record.output, record.session_id, record.routing_verified) == (
        "succeeded",
        "done",
        "s-1",
        True,
    )
    assert record.finished_at is not None
    for step in (worker.cancel, lambda: worker.fail("late"), lambda: worker.start(warm=True, key=None)):
        with pytest.raises(WorkerStateError):
            step()
    assert worker.record().status == "succeeded"


@pytest.mark.anyio
async def test_a_queued_worker_can_be_cancelled_or_fail_without_running() -> None:
    cancelled, failed = Worker(spec_for("builder"), None, "me"), Worker(spec_for("builder"), None, "me")
    cancelled.cancel()
    failed.fail("The worker could not run: no CLI")
    assert (cancelled.status, failed.status) == ("cancelled", "failed")
    assert failed.record().error == "The worker could not run: no CLI"
    assert cancelled.record().started_at is None and cancelled.spec.task == ""  # its task is not kept


@pytest.mark.anyio
async def test_the_step_that_ends_a_worker_releases_its_key() -> None:
    router = KeyRouter()
    spec = spec_for("builder")
    lease = lease_for(spec, {})
    worker = Worker(spec, None, "me", lease=lease)
    key = router.issue(lease)
    worker.start(warm=False, key=key)
    assert router.route({"x-api-key": key.value}) is lease
    worker.cancel()
    assert key.released and router.route({"x-api-key": key.value}) is None


@pytest.mark.anyio
async def test_a_worktree_is_concluded_once_and_can_then_be_removed() -> None:
    tree = Worktree(Path("/tmp/repo"), Path("/tmp/repo-tree"), "aether/b-1", "abc123")
    worker = Worker(spec_for("builder"), None, "me", tree=tree)
    with pytest.raises(WorkerStateError):
        worker.conclude_tree(TreeOutcome(["abc fix"], "1 file changed", removed=False))  # still queued
    worker.start(warm=False, key=None)
    worker.fail("it broke")
    worker.conclude_tree(
        TreeOutcome(["abc fix"], "1 file changed", removed=False, error="Its worktree could not be read: x")
    )
    record = worker.record()
    assert (record.worktree, record.branch, record.commits) == ("/tmp/repo-tree", "aether/b-1", ["abc fix"])
    assert record.error == "it broke. Its worktree could not be read: x."
    with pytest.raises(WorkerStateError):
        worker.conclude_tree(TreeOutcome([], None, removed=True))
    worker.remove_worktree()
    assert (worker.record().worktree, worker.record().branch, worker.worktree) == (None, None, None)


def served_by(model_id: str, upstream: str, provider: str | None = None, group: str = "kimi-k2.5") -> Deployment:
    return Deployment(model_id, group, upstream, "https://provider.example/anthropic", provider)


LISTED = [
    served_by("d-anthropic", "anthropic/kimi-k2.5", "anthropic"),
    served_by("d-openai", "openai/kimi-k2.5", "openai"),
    served_by("d-moonshot", "moonshot/kimi-k2.5", "moonshot"),
    served_by("d-zai", "zai/glm-5", "zai", group="glm-5"),
    served_by("d-minimax", "minimax/MiniMax-M2.5", "minimax", group="minimax-2.5"),
    served_by("d-wrong", "anthropic/glm-5", "anthropic"),
]


@pytest.mark.parametrize(
    ("asked", "model_id", "provider", "codes"),
    [
        ("kimi-k2.5", "d-anthropic", "kimi", []),  # the provider's Anthropic-compatible endpoint
        ("kimi-k2.5", "d-openai", "kimi", []),
        ("kimi-k2.5", "d-moonshot", "kimi", []),  # kimi in Aether's profiles is moonshot in LiteLLM
        ("glm-5", "d-zai", "z.ai", []),
        ("minimax-2.5", "d-minimax", "minimax", []),  # a group named as an alias: not judged by the name it calls
        ("kimi-k2.5", "d-wrong", "kimi", ["deployment_serves_other"]),  # glm-5 behind kimi-k2.5's group
        ("kimi-k2.5", "d-moonshot", "z.ai", ["provider_differs"]),
    ],
    ids=["anthropic/", "openai/", "moonshot/", "zai/", "minimax/", "another model", "another provider"],
)
def test_litellms_deployment_shapes_verify_and_a_misroute_does_not(
    asked: str, model_id: str, provider: str, codes: list[str]
) -> None:
    lease = Lease("w", "builder", "http://proxy", None, (asked,))
    lease.records.append(
        RequestRecord("POST", "/v1/messages", asked, status=200, answered_model=asked, model_id=model_id)
    )
    preflight = Preflight(True, "preflight ok", {d.id: d for d in LISTED})
    verdict = proof.judge_requests(asked, lease, preflight, provider)
    assert [m.code for m in verdict.mismatches] == codes
    assert verdict.verified is (codes == [])
