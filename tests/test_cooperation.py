"""Workers that work together: their own worktrees, follow-up turns, structured answers, answers in pages.

Real Claude Code CLI, real git; only the model is scripted.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import deque
from pathlib import Path

import pytest
from helpers import (
    COMMIT_MY_NAME,
    claude_processes,
    git,
    live_processes,
    stdio_server,
    structured,
    wait_for,
    write_profile,
)
from mcp import Client

from aether_mcp.adapters.server import build_server
from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend, Turn

pytestmark = pytest.mark.anyio

VERDICT = {"type": "object", "properties": {"verdict": {"enum": ["pass", "fail"]}}, "required": ["verdict"]}


async def test_four_builders_in_worktrees_at_once_each_keep_their_own_work(repo: Path, backend: LocalBackend) -> None:
    backend.on_task["kimi-k2.5"] = Turn(tool="Bash", tool_input={"command": COMMIT_MY_NAME, "description": "commit"})
    head = git(repo, "rev-parse", "HEAD")
    async with Client(build_server(ProfileStore())) as client:
        started = [
            structured(
                await client.call_tool(
                    "spawn_worker",
                    {"caste": "builder", "task": "write same.txt", "isolation": "worktree", "wait": False},
                )
            )
            for _ in range(4)
        ]
        done = [
            structured(await client.call_tool("get_worker", {"worker_id": s["worker_id"], "wait_s": 120}))
            for s in started
        ]
        listed = structured(await client.call_tool("list_workers", {}))["workers"]
    assert [d["status"] for d in done] == ["succeeded"] * 4, [d["error"] for d in done]
    for result in done:
        worker_id = result["worker_id"]
        assert result["branch"] == f"aether/{worker_id}" and result["base"] == head
        assert result["worktree"] == str(repo / ".aether" / "worktrees" / worker_id)
        assert len(result["commits"]) == 1 and result["commits"][0].endswith(f"from {worker_id}")
        assert "same.txt | 1 +" in result["diffstat"]
        # its branch holds its own commit, on the base, with its own content
        assert git(repo, "rev-list", "--count", f"{head}..{result['branch']}") == "1"
        assert git(repo, "show", f"{result['branch']}:same.txt") == worker_id
    assert {w["worktree"] for w in listed} == {d["worktree"] for d in done}
    # the main tree and its HEAD are untouched
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / "same.txt").exists()


async def test_an_untouched_worktree_goes_and_a_kept_one_is_discarded(repo: Path, backend: LocalBackend) -> None:
    async with Client(build_server(ProfileStore())) as client:
        idle = structured(
            await client.call_tool("spawn_worker", {"caste": "scout", "task": "look", "isolation": "worktree"})
        )
        assert (idle["worktree"], idle["branch"], idle["commits"]) == (None, None, [])
        backend.scripts["kimi-k2.5"] = deque(
            [Turn(tool="Bash", tool_input={"command": COMMIT_MY_NAME, "description": "commit"})]
        )
        kept = structured(
            await client.call_tool("spawn_worker", {"caste": "builder", "task": "b", "isolation": "worktree"})
        )
        assert Path(kept["worktree"]).is_dir()
        dropped = structured(await client.call_tool("discard_worker", {"worker_id": kept["worker_id"]}))
        assert dropped["worktree"] is None
    assert not Path(kept["worktree"]).exists()
    assert git(repo, "branch", "--list", "aether/*") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_workers_clean_removes_merged_worktrees(repo: Path, cli_env: dict[str, str]) -> None:
    for name in ("merged", "unmerged"):
        git(repo, "worktree", "add", "-q", "-b", f"aether/{name}", str(repo / ".aether" / name), "HEAD")
    (repo / ".aether" / "unmerged" / "x").write_text("x")
    git(repo / ".aether" / "unmerged", "add", "x")
    git(repo / ".aether" / "unmerged", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    cleaned = subprocess.run(
        ["aether-mcp", "workers", "clean"], env=cli_env, capture_output=True, text=True, check=False
    )
    assert cleaned.stdout == "removed aether/merged and its worktree\n", cleaned.stderr
    assert git(repo, "branch", "--format=%(refname:short)", "--list", "aether/*") == "aether/unmerged"
    everything = subprocess.run(
        ["aether-mcp", "workers", "clean", "--all"], env=cli_env, capture_output=True, text=True, check=False
    )
    assert everything.stdout == "removed aether/unmerged and its worktree\n"


async def test_outside_git_a_worktree_is_refused(colony_profile: Path, backend: LocalBackend) -> None:
    async with Client(build_server(ProfileStore())) as client:
        refused = await client.call_tool("spawn_worker", {"caste": "builder", "task": "b", "isolation": "worktree"})
        assert refused.is_error
        assert f"isolation 'worktree' needs a git repository, and {colony_profile.parent} is not in one" in (
            refused.content[0].text  # type: ignore[union-attr]
        )
        bad_base = await client.call_tool("spawn_worker", {"caste": "builder", "task": "b", "base": "main"})
        assert bad_base.is_error and "base applies only with isolation 'worktree'" in bad_base.content[0].text  # type: ignore[union-attr]
    assert backend.models_asked() == []


async def test_a_follow_up_continues_the_same_conversation(repo: Path, backend: LocalBackend) -> None:
    async with Client(build_server(ProfileStore())) as client:
        first = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "write the parser"}))
        second = structured(
            await client.call_tool(
                "continue_worker", {"worker_id": first["worker_id"], "message": "the watcher found a bug in line 3"}
            )
        )
        chain = structured(await client.call_tool("get_worker", {"worker_id": second["worker_id"]}))
    asked = [r for r in backend.requests if r.path.startswith("/v1/messages")]
    assert [r.model for r in asked] == ["kimi-k2.5", "kimi-k2.5"]
    later = asked[1].conversation
    assert any("write the parser" in text for text in later)  # the first turn's conversation came along
    assert any("served-by kimi-k2.5" in text for text in later)
    assert "the watcher found a bug in line 3" in later[-1]
    assert first["routing_verified"] and second["routing_verified"]
    assert (second["continues"], second["turn"], second["session_id"]) == (first["worker_id"], 2, first["session_id"])
    assert (chain["continues"], chain["turn"]) == (first["worker_id"], 2)
    log = [__import__("json").loads(line) for line in (repo / ".aether" / "spawn-log.jsonl").read_text().splitlines()]
    assert [(e["worker_id"], e["continues"], e["turn"]) for e in log] == [
        (first["worker_id"], None, 1),
        (second["worker_id"], first["worker_id"], 2),
    ]


async def test_a_structured_answer_is_validated(colony_profile: Path, backend: LocalBackend) -> None:
    async with Client(build_server(ProfileStore())) as client:
        backend.scripts["minimax-2.5"] = deque([Turn(tool="StructuredOutput", tool_input={"verdict": "pass"})])
        fits = structured(
            await client.call_tool("spawn_worker", {"caste": "watcher", "task": "t", "output_schema": VERDICT})
        )
        # a model that only answers in prose never makes a valid StructuredOutput call
        prose = structured(
            await client.call_tool("spawn_worker", {"caste": "watcher", "task": "t", "output_schema": VERDICT})
        )
        bad = await client.call_tool("spawn_worker", {"caste": "watcher", "task": "t", "output_schema": {"type": 5}})
    assert (fits["status"], fits["structured_output"], fits["error"]) == ("succeeded", {"verdict": "pass"}, None)
    assert (prose["status"], prose["structured_output"]) == ("failed", None)
    assert prose["error"].startswith("The worker's answer does not fit output_schema: it gave no structured answer")
    assert bad.is_error and "output_schema is not a valid JSON Schema" in bad.content[0].text  # type: ignore[union-attr]


async def test_a_long_answer_reads_in_pages(colony_profile: Path, backend: LocalBackend) -> None:
    answer = "".join(f"{i:06d}" for i in range(10_000))  # 60,000 characters
    backend.scripts["kimi-k2.5"] = deque([Turn(text=answer)])
    async with Client(build_server(ProfileStore())) as client:
        first = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "t"}))
        pages = [first["output"]]
        while first["output_chars"] > sum(len(p) for p in pages):
            offset = sum(len(p) for p in pages)
            more = structured(await client.call_tool("get_worker", {"worker_id": first["worker_id"], "offset": offset}))
            assert more["output_offset"] == offset
            pages.append(more["output"])
    assert first["output_chars"] == 60_000 and len(pages) == 3
    assert "".join(pages) == answer


async def test_a_file_name_that_is_not_utf8_does_not_break_the_report(repo: Path, backend: LocalBackend) -> None:
    make = "git config core.quotePath false && touch \"$(printf 'bad\\377name')\""
    backend.on_task["kimi-k2.5"] = Turn(tool="Bash", tool_input={"command": make, "description": "odd name"})
    async with Client(build_server(ProfileStore())) as client:
        result = structured(
            await client.call_tool("spawn_worker", {"caste": "builder", "task": "b", "isolation": "worktree"})
        )
        assert not (await client.call_tool("list_workers", {})).is_error  # the server still serves
    assert result["status"] == "succeeded" and result["worktree"]
    assert "1 untracked file(s): bad" in result["diffstat"]


def test_workers_clean_keeps_uncommitted_work_and_running_workers(repo: Path, cli_env: dict[str, str]) -> None:
    for name in ("dirty", "running"):
        git(repo, "worktree", "add", "-q", "-b", f"aether/{name}", str(repo / ".aether" / name), "HEAD")
    (repo / ".aether" / "dirty" / "feature.py").write_text("work in progress\n")
    git(repo, "worktree", "lock", str(repo / ".aether" / "running"))
    for args in (["clean"], ["clean", "--all"]):
        subprocess.run(["aether-mcp", "workers", *args], env=cli_env, capture_output=True, text=True, check=True)
        assert (repo / ".aether" / "running").is_dir()  # a locked worktree belongs to a running worker
    assert not (repo / ".aether" / "dirty").exists()  # --all took the uncommitted one, only then


async def test_a_schema_cannot_reach_out_and_a_broken_one_fails_the_worker_only(
    colony_profile: Path, backend: LocalBackend
) -> None:
    async with Client(build_server(ProfileStore())) as client:
        remote = {"$ref": f"{backend.url}/schema.json"}
        refused = await client.call_tool("spawn_worker", {"caste": "watcher", "task": "t", "output_schema": remote})
        assert refused.is_error and "output_schema refers outside itself" in refused.content[0].text  # type: ignore[union-attr]
        backend.scripts["minimax-2.5"] = deque([Turn(tool="StructuredOutput", tool_input={"verdict": "pass"})])
        nowhere = {"type": "object", "properties": {"verdict": {"$ref": "#/$defs/missing"}}}
        broken = structured(
            await client.call_tool("spawn_worker", {"caste": "watcher", "task": "t", "output_schema": nowhere})
        )
        assert not (await client.call_tool("list_workers", {})).is_error
    assert broken["status"] == "failed"
    assert [r.path for r in backend.requests if "schema" in r.path] == []


async def test_a_server_killed_outright_leaves_interrupted_records_and_cleanable_worktrees(
    repo: Path, backend: LocalBackend, cli_env: dict[str, str]
) -> None:
    """Finding 16: after kill -9 of a server running three worktree workers, the spawn log held no line for them
    and their worktrees stayed locked for good. Each worker is noted before it runs, so the crash leaves three
    interrupted records; the locks of a server that is gone are stale, shown and cleaned; work left in a
    worktree is kept without --all."""
    import signal

    from aether_mcp.procs import parent

    backend.delay_s = 30  # the workers are mid-answer when their server dies
    async with Client(stdio_server(repo)) as client:
        trees = []
        for i in range(3):
            arguments = {"caste": "builder", "task": f"work {i}", "isolation": "worktree", "wait": False}
            trees.append(structured(await client.call_tool("spawn_worker", arguments))["worktree"])
        assert await wait_for(lambda: len(backend.models_asked()) == 3, seconds=60)
        (server,) = [
            p.pid for p in live_processes() if b"aether_mcp\x00serve" in p.cmdline and parent(p.pid) == os.getpid()
        ]
        os.kill(server, signal.SIGKILL)
        assert await wait_for(lambda: not claude_processes(str(repo.parent)), seconds=30)  # its workers die with it
    assert len(list((repo / ".aether" / "running").glob("*.json"))) == 3
    (Path(trees[0]) / "unsaved.txt").write_text("work a user may want\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["aether-mcp", *args], cwd=repo, env=cli_env, capture_output=True, text=True, check=False)

    listed = json.loads(run("workers", "--json").stdout)
    assert sorted(e["status"] for e in listed) == ["interrupted"] * 3
    logged = [json.loads(line) for line in (repo / ".aether" / "spawn-log.jsonl").read_text().splitlines()]
    assert sorted(e["status"] for e in logged) == ["interrupted"] * 3 and not list(
        (repo / ".aether" / "running").iterdir()
    )
    cleaned = run("workers", "clean")
    assert cleaned.stdout.count("its lock was stale") == 3, cleaned.stdout
    assert cleaned.stdout.count("removed aether/") == 2 and Path(trees[0]).exists()  # its work is kept
    assert "removed aether/" in run("workers", "clean", "--all").stdout and not Path(trees[0]).exists()


async def test_a_wave_leaves_nothing_of_aether_mcps_in_git_status(isolated: Path, backend: LocalBackend) -> None:
    """A project that commits Aether's own files in .aether/ and ignores nothing: after a wave (one worker in a
    worktree), git status lists nothing, and Aether's file is as it was."""
    git(isolated, "init", "-q", "-b", "main")
    (isolated / ".aether").mkdir()
    (isolated / ".aether" / "COLONY_STATE.json").write_text('{"goal": "x"}\n')
    write_profile(isolated / "model-profiles.yaml", backend.url)
    git(isolated, "add", ".")
    git(isolated, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    async with Client(build_server(ProfileStore())) as client:
        for arguments in (
            {"caste": "builder", "task": "hi"},
            {"caste": "scout", "task": "hi", "isolation": "worktree"},
        ):
            done = structured(await client.call_tool("spawn_worker", arguments))
            assert done["status"] == "succeeded", done["error"]
    assert (isolated / ".aether" / "spawn-log.jsonl").is_file()
    assert git(isolated, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(isolated, "ls-files", ".aether") == ".aether/COLONY_STATE.json"
