"""The command line, run as a user runs it: exact output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DATA

from aether_mcp.profile.parsing import parse_profile
from aether_mcp.workers.claude_cli import find_cli


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["aether-mcp", *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_list_prints_an_aligned_table(aether_profile: Path, cli_env: dict[str, str]) -> None:
    assert run("caste-models", "set", "scout=glm-5", env=cli_env).returncode == 0
    result = run("caste-models", "list", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "CASTE         MODEL        SOURCE    AGENT  PROVIDER  CONTEXT\n"
        "prime         glm-5        profile   -      zhipu     200,000\n"
        "architect     glm-5        profile   -      zhipu     200,000\n"
        "oracle        minimax-2.5  profile   -      minimax   200,000\n"
        "builder       kimi-k2.5    profile   -      kimi      256,000\n"
        "scout*        glm-5        override  -      zhipu     200,000\n"
        "route_setter  glm-5        profile   -      zhipu     200,000\n"
        "watcher       minimax-2.5  profile   -      minimax   200,000\n"
        "\n"
        f"Profile: {aether_profile} (.aether/model-profiles.yaml)\n"
        "* user override (aether-mcp caste-models reset CASTE removes it)\n"
    )


def test_list_json(aether_profile: Path, cli_env: dict[str, str]) -> None:
    result = run("caste-models", "list", "--json", env=cli_env)
    data = json.loads(result.stdout)
    assert [c["caste"] for c in data["castes"]][:2] == ["prime", "architect"]
    assert data["path"] == str(aether_profile)
    assert "sk-litellm-local" not in result.stdout


def test_slot_castes_show_their_slot(isolated: Path, cli_env: dict[str, str]) -> None:
    (isolated / "model-profiles.yaml").write_text((DATA / "aether-slots.yaml").read_text())
    result = run("caste-models", "list", env=cli_env)
    assert result.stdout.splitlines()[1:6] == [
        "prime       glm-5          slot (opus)    -      -         -",
        "builder     glm-5-turbo    slot (sonnet)  -      -         -",
        "scout       glm-4.5-air    slot (haiku)   -      -         -",
        "chronicler  (CLI default)  inherit        -      -         -",
        "oracle      minimax-2.5    profile        -      -         -",
    ]


@pytest.mark.parametrize("words", [["builder=glm-5"], ["builder", "glm-5"]])
def test_set_and_reset(aether_profile: Path, cli_env: dict[str, str], words: list[str]) -> None:
    original = aether_profile.read_bytes()
    result = run("caste-models", "set", *words, env=cli_env)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"builder: kimi-k2.5 -> glm-5 (override in {aether_profile})\n",
        "",
    )
    result = run("caste-models", "reset", "builder", env=cli_env)
    assert (result.returncode, result.stdout) == (0, f"builder: override removed, now kimi-k2.5 ({aether_profile})\n")
    assert aether_profile.read_bytes() == original
    result = run("caste-models", "reset", "builder", env=cli_env)
    assert result.stdout == "builder: had no override, still kimi-k2.5\n"


def test_set_warns_about_a_model_without_metadata(aether_profile: Path, cli_env: dict[str, str]) -> None:
    result = run("caste-models", "set", "scout=qwen-3", env=cli_env)
    assert result.returncode == 0
    assert result.stderr == (
        "Warning: Model 'qwen-3' is not in model_metadata (known: kimi-k2.5, glm-5, minimax-2.5); "
        "check the proxy routes it.\n"
    )


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (
            ["caste-models", "set", "scot=glm-5"],
            "Error: Unknown caste 'scot'. Known castes: prime, architect, oracle, builder, scout, route_setter, watcher.\n",
        ),
        (
            ["caste-models", "set", "scout=two words"],
            "Error: Invalid model name 'two words': use the name the proxy knows: letters, digits and . _ : / @ + -, "
            "starting with a letter or digit.\n",
        ),
        (
            ["caste-models", "set", "scout"],
            "Error: Use: aether-mcp caste-models set CASTE=MODEL (or set CASTE MODEL).\n",
        ),
        (
            ["caste-models", "reset", "nobody"],
            "Error: Unknown caste 'nobody'. Known castes: prime, architect, oracle, builder, scout, route_setter, watcher.\n",
        ),
    ],
)
def test_bad_input_is_an_error_and_writes_nothing(
    aether_profile: Path, cli_env: dict[str, str], args: list[str], stderr: str
) -> None:
    before = aether_profile.read_bytes()
    result = run(*args, env=cli_env)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", stderr)
    assert aether_profile.read_bytes() == before


def test_a_broken_profile_is_reported_with_its_line(aether_profile: Path, cli_env: dict[str, str]) -> None:
    aether_profile.write_text("worker_models:\n  scout: kimi\n  scout: glm\n")
    result = run("caste-models", "set", "scout=x", env=cli_env)
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: {aether_profile} is not valid YAML: line 3, column 3: duplicate key 'scout'. "
        "Fix the file; it was not changed.\n"
    )
    assert aether_profile.read_text() == "worker_models:\n  scout: kimi\n  scout: glm\n"


def test_profiles_path_names_the_rule(aether_profile: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    assert run("profiles", "path", env=cli_env).stdout == f"{aether_profile} (.aether/model-profiles.yaml)\n"
    other = tmp_path / "other.yaml"
    other.write_text("worker_models: {scout: x}\n")
    assert run("--profiles", str(other), "profiles", "path", env=cli_env).stdout == f"{other} (--profiles)\n"
    assert run("profiles", "path", "--profiles", str(other), env=cli_env).stdout == f"{other} (--profiles)\n"
    env = {**cli_env, "AETHER_MODEL_PROFILES": str(other)}
    data = json.loads(run("profiles", "path", "--json", env=env).stdout)
    assert data == {"path": str(other), "rule": "AETHER_MODEL_PROFILES", "exists": True}


def test_no_command_prints_help_and_fails(cli_env: dict[str, str]) -> None:
    result = run(env=cli_env)
    assert result.returncode == 2
    assert "caste-models" in result.stderr


def test_spawn_prints_the_model_and_the_proof(colony_profile: Path, cli_env: dict[str, str]) -> None:
    result = run("spawn", "builder", "say hi", env=cli_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("worker builder-") and ": succeeded in " in lines[0]
    assert lines[1:3] == ["model: kimi-k2.5 (profile)", "routing_verified: true"]
    assert lines[-2:] == ["output:", "served-by kimi-k2.5"]


@pytest.mark.anyio
async def test_spawn_takes_every_argument_the_tool_takes_but_wait(cli_env: dict[str, str]) -> None:
    from mcp import Client

    from aether_mcp.adapters.cli import SPAWN_FLAGS
    from aether_mcp.adapters.server import build_server
    from aether_mcp.profile.store import ProfileStore

    async with Client(build_server(ProfileStore())) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "spawn_worker")
    arguments = set(tool.input_schema["properties"]) - {"wait"}
    helped = run("spawn", "--help", env=cli_env)
    assert helped.returncode == 0, helped.stderr
    usage = helped.stdout.split("\n\n")[0]  # the usage line names every positional and option
    named = {name for name in arguments if name in ("caste", "task")}
    named |= {name for name in arguments if SPAWN_FLAGS.get(name, "--" + name.replace("_", "-")) + " " in usage}
    assert named == arguments
    # caste, task, cwd, model, timeout_s, isolation, runs_on, base, schema, budgets, label, call
    assert len(arguments) == 13


def test_spawn_passes_the_tools_options_on(colony_profile: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    schema = tmp_path / "answer.json"
    schema.write_text('{"type": "object", "properties": {"ok": {"type": "boolean"}}}')
    result = run(
        "spawn", "builder", "say hi", "--output-schema", f"@{schema}", "--max-tokens", "100000", "--json", env=cli_env
    )
    data = json.loads(result.stdout)
    # the local backend never calls StructuredOutput: the schema reached the worker, and the answer misfits it
    assert data["status"] == "failed" and "does not fit output_schema" in data["error"], data["error"]
    bad = run("spawn", "builder", "say hi", "--max-tokens", "0", env=cli_env)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr.startswith("Error: The spawn cannot start: max_tokens: Input should be greater than 0")
    unpriced = run("spawn", "builder", "say hi", "--max-budget-usd", "0.5", env=cli_env)
    assert "model_metadata has no prices for kimi-k2.5" in unpriced.stderr
    worktree = run("spawn", "builder", "say hi", "--base", "main", env=cli_env)
    assert worktree.stderr == "Error: base applies only with isolation 'worktree'.\n"


def test_spawn_exits_non_zero_when_the_worker_fails(colony_profile: Path, cli_env: dict[str, str], backend) -> None:
    backend.fail_status = 500
    result = run("spawn", "builder", "say hi", "--json", env=cli_env)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed" and data["routing_verified"] is False
    assert "500" in data["error"]


def test_spawn_refusal_is_an_error_line(colony_profile: Path, cli_env: dict[str, str]) -> None:
    result = run("spawn", "builder", "say hi", "--model", "gpt-9", env=cli_env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("Error: The proxy at http://127.0.0.1:")
    assert "does not route model 'gpt-9'" in result.stderr


def test_demo_proves_three_castes_on_three_models(cli_env: dict[str, str]) -> None:
    result = run("demo", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("builder", "scout", "watcher"))]
    assert [row[:4] for row in rows] == [
        ["builder", "kimi-k2.5", "kimi-k2.5", "yes"],
        ["scout", "glm-5", "glm-5", "yes"],
        ["watcher", "minimax-2.5", "minimax-2.5", "yes"],
    ]
    assert result.stdout.endswith("Every caste ran on its own model.\n")


def test_the_demo_runs_its_workers_with_the_cli_it_was_given(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A user whose CLI is only at a path of their own, named by AETHER_CLAUDE_CLI, in a fresh HOME."""
    real = find_cli(parse_profile("{}", "none"), cli_env).path
    calls = tmp_path / "calls.log"
    own = tmp_path / "bin" / "my-claude"
    own.parent.mkdir()
    own.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    own.chmod(0o755)
    home = tmp_path / "fresh-home"
    home.mkdir()
    result = run("demo", env={**cli_env, "AETHER_CLAUDE_CLI": str(own), "HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    started = calls.read_text().splitlines()
    assert sum("--model parent-model" in line for line in started) == 1  # the parent session
    assert [line.split("--model ")[1].split()[0] for line in started if "--strict-mcp-config" in line] == [
        "kimi-k2.5",
        "glm-5",
        "minimax-2.5",
    ]  # and every worker


def test_a_failed_demo_row_shows_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    from aether_mcp.commands.demo import print_results

    refused = {"error": "No Claude Code CLI found. Install one."}
    print_results({"builder": "kimi-k2.5", "scout": "glm-5"}, [refused, {"caste": "scout", "model": "glm-5"}], [])
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["builder", "kimi-k2.5", "(not", "seen)", "NO", "-"]
    assert "builder: No Claude Code CLI found. Install one." in out


def test_spawn_progress_is_plain_lines_when_piped(colony_profile: Path, cli_env: dict[str, str], backend) -> None:
    from aether_mcp.testing.backend import Turn

    backend.scripts["kimi-k2.5"] = __import__("collections").deque([Turn(tool="Glob", tool_input={"pattern": "*.md"})])
    result = run("spawn", "builder", "look around", env=cli_env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(": ", 1)[1].rsplit(", ", 1)[0] for line in lines] == [
        "running, turn 1, using Glob",
        "running, turn 2, using Glob",
    ]
    assert "\r" not in result.stderr


def test_spawn_progress_is_live_on_a_terminal(colony_profile: Path, cli_env: dict[str, str], backend) -> None:
    backend.delay_s = 0.6
    shell = subprocess.run(
        ["script", "-qec", "aether-mcp spawn builder hi", "/dev/null"],
        capture_output=True,
        env=cli_env,
        timeout=60,
        check=False,
    )
    screen = shell.stdout.decode()  # bytes: text mode would turn each \r into \n
    assert shell.returncode == 0
    assert screen.count("\r\x1b[K") > 2 and "running, turn 0" in screen
    assert "routing_verified: true" in screen


@pytest.mark.parametrize(
    "command",
    [
        ["doctor"],
        ["workers"],
        ["workers", "--json"],
        ["costs"],
        ["caste-models", "list"],
        ["caste-models", "list", "--json"],
        ["profiles", "path"],
        ["agents", "sync", "--check"],
        ["install", "--help"],
        ["--help"],
    ],
    ids=" ".join,
)
def test_every_command_ends_quietly_when_its_reader_goes_away(isolated: Path, command: list[str]) -> None:
    """`aether-mcp doctor | head -1`: the reader has gone before the command writes. It ends with status 0 and
    nothing on stderr, as `git log | head` does."""
    (isolated / ".aether").mkdir()
    (isolated / ".aether" / "spawn-log.jsonl").write_text('{"caste": "builder", "status": "succeeded"}\n')
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "aether_mcp", *command],
            cwd=isolated,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (0, "")
