"""The command line: the same core calls as the MCP tools, printed for people.

Claude Code runs the hook (`aether-mcp hook pre-tool-use`) through this module before every sub-agent call,
so its top imports only what the hook needs; each command imports the rest of what it uses when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import terminal
from ..errors import AetherError
from ..hook_settings import HOOK_WORDS, WIRE_EVENTS
from ..tables import table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..profile.resolution import CasteModel
    from ..profile.store import ProfileStore
    from ..workers.result import WorkerResult
    from ..workers.worker import Worker


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _command(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        return _reader_gone()


def _command(words: list[str]) -> int:
    if words == HOOK_WORDS:
        # Claude Code runs the hook before every sub-agent call: it is run before the parser is built (a few ms)
        # and the profile store is never made (pydantic), so that each call waits as little as it can.
        from .hook import main as run_hook

        return run_hook()
    if len(words) == 2 and words[0] == "hook" and words[1] in WIRE_EVENTS.values():
        from ..session.hook import main as tell_gateway  # the standard library alone: each sub-agent waits for it

        return tell_gateway(words[1])
    if words[:1] in (["run"], ["claude"]):
        return _wrapped(words)
    parser = _parser()
    args = parser.parse_args(words)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    from ..profile.store import ProfileStore  # pydantic: after the hook's words are ruled out

    store = ProfileStore(getattr(args, "profiles", None))
    # What a command prints may come from files, workers or a proxy: shown, never obeyed by the terminal. The
    # server speaks its protocol on stdout, and top draws the screen itself.
    shown = contextlib.nullcontext() if args.run in (_serve, _top) else terminal.shown_output()
    try:
        with shown:
            return int(args.run(store, args) or 0)
    except AetherError as exc:
        print(f"Error: {terminal.shown(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _wrapped(words: list[str]) -> int:
    """`aether-mcp run [--profiles FILE] [--] COMMAND...` and `aether-mcp claude ARGS...`: read by hand, since
    every word after the command is the command's own (argparse would take `claude --help` for ours)."""
    from ..profile.store import ProfileStore
    from ..session.run import run_command

    rest, profiles = words[1:], None
    if words[0] == "run":
        if rest[:1] in (["-h"], ["--help"]):
            print(WRAPPED_HELP)
            return 0
        if rest[:1] == ["--profiles"] and len(rest) > 1:
            profiles, rest = rest[1], rest[2:]
        rest = rest[1:] if rest[:1] == ["--"] else rest
    store = ProfileStore(profiles)
    try:
        if words[0] == "claude":
            from ..workers.claude_cli import find_cli

            rest = [find_cli(store.load()[0], os.environ).path, *rest]
        return run_command(rest, store, os.environ, sys.stderr)
    except AetherError as exc:
        print(f"Error: {terminal.shown(str(exc))}", file=sys.stderr)
        return 1


WRAPPED_HELP = """usage: aether-mcp run [--profiles FILE] [--] COMMAND [ARGS...]
       aether-mcp claude [CLAUDE ARGS...]

Run COMMAND (Claude Code, or anything that starts it) with every model request passing through aether-mcp's
gateway: each Aether caste's sub-agents go to the caste's model, with proof in the spawn log (mode wire). The
terminal, the arguments and the exit status are the command's own. `aether-mcp claude` runs the Claude Code CLI."""


def _reader_gone() -> int:
    """The reader of our output went away (`aether-mcp workers | head`): end quietly, as `git log | head` does.
    What is still buffered would fail again when Python flushes stdout at exit: it goes nowhere instead."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _parser() -> argparse.ArgumentParser:
    # --profiles is accepted before or after the command; SUPPRESS keeps the
    # sub-command's default from hiding a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profiles", metavar="PATH", default=argparse.SUPPRESS, help="the profile file to use")
    parser = argparse.ArgumentParser(
        prog="aether-mcp", description="Run each Aether caste on its own model.", parents=[common]
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    _add_serve(commands, common)
    # Listed for --help only: main reads their words itself (every word after the command is the command's).
    commands.add_parser("run", help="run a command (claude) with each caste's sub-agents routed at the wire")
    commands.add_parser("claude", help="the same as `aether-mcp run -- claude ARGS...`")

    demo = commands.add_parser("demo", parents=[common], help="show routing through a real MCP session (no API key)")
    demo.set_defaults(run=_demo)

    _add_spawn(commands, common)

    doctor = commands.add_parser(
        "doctor", parents=[common], help="check that routing works, with a fix for each failure"
    )
    doctor.add_argument("caste", nargs="?", help="check one caste only")
    doctor.add_argument(
        "--live", action="store_true", help="also spawn a one-turn worker per model (costs a few tokens)"
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(run=_doctor)

    workers = commands.add_parser(
        "workers",
        parents=[common],
        help="queued and running workers of every session, then the spawn log's, newest first",
    )
    workers.add_argument(
        "action", nargs="?", choices=["clean"], help="clean: remove workers' git worktrees whose branch is merged"
    )
    workers.add_argument("--all", action="store_true", help="with clean: remove unmerged worktrees too")
    workers.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    workers.add_argument("--json", action="store_true", help="print JSON lines' fields as a JSON list")
    workers.set_defaults(run=_workers)

    top = commands.add_parser(
        "top", parents=[common], help="watch the project's workers live: every session's, with their evidence"
    )
    top.set_defaults(run=_top)

    castes = commands.add_parser("caste-models", parents=[common], help="show and change which model each caste uses")
    verbs = castes.add_subparsers(title="verbs", metavar="VERB", required=True)
    listing = verbs.add_parser("list", parents=[common], help="the routing table")
    listing.add_argument("--task", help="a task description, for castes routed by task keywords")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)
    setting = verbs.add_parser(
        "set", parents=[common], help="put a caste on a model: set CASTE=MODEL or set CASTE MODEL"
    )
    setting.add_argument("assignment", nargs="+", metavar="CASTE=MODEL")
    setting.add_argument("--create", action="store_true", help="add the caste if the profile lacks it")
    setting.add_argument("--json", action="store_true", help="print JSON")
    setting.set_defaults(run=_set)
    resetting = verbs.add_parser("reset", parents=[common], help="remove a caste's override")
    resetting.add_argument("caste")
    resetting.add_argument("--json", action="store_true", help="print JSON")
    resetting.set_defaults(run=_reset)

    profiles = commands.add_parser("profiles", parents=[common], help="about the profile file")
    profile_verbs = profiles.add_subparsers(title="verbs", metavar="VERB", required=True)
    path = profile_verbs.add_parser("path", parents=[common], help="the profile file in use, and which rule chose it")
    path.add_argument("--json", action="store_true", help="print JSON")
    path.set_defaults(run=_path)

    _add_project_commands(commands, common)
    return parser


def _add_project_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    costs = commands.add_parser("costs", parents=[common], help="what each caste and model cost, from the spawn log")
    costs.add_argument("--since", help="only workers that finished since then: a date (2026-11-01) or an age (7d, 24h)")
    costs.add_argument("--json", action="store_true", help="print JSON")
    costs.set_defaults(run=_costs)
    trust = commands.add_parser(
        "trust",
        parents=[common],
        help="trust a profile's settings that can run programs or send secrets (proxy, tokens, claude_cli, ...)",
    )
    trust.add_argument(
        "path", nargs="?", help="a profile or agent file (default: the profile in use and the project's agents)"
    )
    trust.add_argument("--json", action="store_true", help="print JSON")
    trust.set_defaults(run=_trust)
    install = commands.add_parser(
        "install",
        parents=[common],
        help="route this project's castes: register the server in .mcp.json and the sub-agent hook, trust its agents",
    )
    install.add_argument(
        "--shared", action="store_true", help="put the hook in .claude/settings.json (default: settings.local.json)"
    )
    install.add_argument(
        "--trust",
        action="store_true",
        help="also trust the project's profile and agents without asking (they are listed first)",
    )
    install.set_defaults(run=_install)
    uninstall = commands.add_parser("uninstall", parents=[common], help="take out exactly what install added")
    uninstall.add_argument("--shared", action="store_true", help="the hook was installed with --shared")
    uninstall.set_defaults(run=_uninstall)

    # Listed for --help only: main runs the hook itself, as Claude Code calls it (HOOK_WORDS), and nothing else.
    hook = commands.add_parser("hook", help="Claude Code hooks (run by Claude Code, not by hand)")
    hook.add_argument("event", choices=[HOOK_WORDS[1], *WIRE_EVENTS.values()])

    agents = commands.add_parser("agents", parents=[common], help="native mode: the agents' own model: lines")
    agent_verbs = agents.add_subparsers(title="verbs", metavar="VERB", required=True)
    sync = agent_verbs.add_parser(
        "sync", parents=[common], help="write each caste's model into its agent file's model: line"
    )
    sync.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file differs")
    sync.set_defaults(run=_agents_sync)


# The spawn options whose flag is not the field's own name.
SPAWN_FLAGS = {"timeout_s": "--timeout"}


def _add_spawn(commands: Any, common: argparse.ArgumentParser) -> None:
    """`spawn` takes what the spawn_worker tool takes (but `wait`: the command waits for its worker)."""
    from ..workers.request import SpawnRequest

    spawn = commands.add_parser("spawn", parents=[common], help="run one worker of a caste on its model")
    fields = SpawnRequest.model_fields
    spawn.add_argument("caste", help=fields["caste"].description)
    spawn.add_argument("task", nargs="?", default="", help=f"{fields['task'].description} ('-' reads it from stdin)")
    for name, info in fields.items():
        if name in ("caste", "task"):
            continue
        flag = SPAWN_FLAGS.get(name, "--" + name.replace("_", "-"))
        kind, choices = _option_kind(info.annotation)
        help_text = (info.description or "") + (" (a JSON object, or @FILE)" if kind is _json_object else "")
        spawn.add_argument(flag, dest=name, type=kind, choices=choices, help=help_text.replace("%", "%%"))
    spawn.add_argument(
        "--call-id", help="the id a denied sub-agent call named: the worker takes that call's prompt and description"
    )
    spawn.add_argument("--json", action="store_true", help="print the result as JSON")
    spawn.set_defaults(run=_spawn)


def _option_kind(annotation: Any) -> tuple[Any, list[str] | None]:
    """How argparse reads an optional request field: its type, and its choices for a Literal."""
    import typing

    arms = [arm for arm in typing.get_args(annotation) if arm is not type(None)] or [annotation]
    kind = arms[0]
    if typing.get_origin(kind) is typing.Literal:
        return str, [str(choice) for choice in typing.get_args(kind)]
    if kind in (int, float, str):
        return kind, None
    return _json_object, None


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given inline, or as @FILE."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("a JSON object is needed")
    return value


def _add_serve(commands: Any, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="run the MCP server (stdio by default)")
    serve.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="streamable-http only (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="streamable-http only (default: 8765)")
    serve.add_argument(
        "--token-file",
        type=Path,
        help="streamable-http: the bearer token clients must send (default: made once, 0600, in ~/.config/aether-mcp)",
    )
    serve.add_argument(
        "--allow-remote", action="store_true", help="streamable-http: allow a --host that is not a loopback address"
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="streamable-http: another name clients use in the Host header (repeatable)",
    )
    serve.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO", help="stderr log level"
    )
    serve.set_defaults(run=_serve)


def _serve(store: ProfileStore, args: argparse.Namespace) -> int:
    from .server import serve, serve_http  # the MCP stack loads only for the server

    if args.transport == "streamable-http":
        serve_http(
            store,
            args.host,
            args.port,
            token_file=args.token_file,
            allow_remote=args.allow_remote,
            extra_hosts=tuple(args.allowed_host),
            log_level=args.log_level,
        )
    else:
        serve(store, args.log_level)
    return 0


def _demo(store: ProfileStore, args: argparse.Namespace) -> int:
    from ..commands.demo import run_demo  # the local backend: the demo's alone

    return run_demo()


def _spawn(store: ProfileStore, args: argparse.Namespace) -> int:
    # The worker engine and its event loop: a spawn's alone, off the hook's path.
    import anyio

    from ..workers.colony import Colony
    from ..workers.request import SpawnRequest, spawn_request
    from .handoff import with_kept_call

    options = {name: getattr(args, name) for name in SpawnRequest.model_fields if name not in ("caste", "task")}
    options["task"] = sys.stdin.read() if args.task == "-" else args.task
    if args.cwd:  # relative to where the command runs
        options["cwd"] = str(Path(args.cwd).resolve())
    if args.call_id:
        options = with_kept_call(args.call_id, args.caste, options)
    request = spawn_request(caste=args.caste, **options)

    async def run() -> WorkerResult:
        from . import control  # off the hook's path

        async with Colony(store) as colony:
            worker = await colony.spawn(request)  # a refusal raises here, as it is, before anything runs
            async with anyio.create_task_group() as group:
                await group.start(control.serve, colony)  # `aether-mcp top` can stop it, as a server's worker
                await _show_progress(worker)
                group.cancel_scope.cancel()
        return worker.record()

    result = anyio.run(run)
    if args.json:
        _print_json(result)
    else:
        _print_worker(result)
    return 0 if result.status == "succeeded" else 1


async def _show_progress(worker: Worker) -> None:
    """Live on a terminal (turn, tool in use, elapsed), one plain line per turn when stderr is piped."""
    live = sys.stderr.isatty()
    started, shown = time.monotonic(), -1
    while not worker.done.is_set():
        await worker.news(0.2 if live else None)
        tool = f", using {worker.last_tool}" if worker.last_tool else ""
        line = f"{worker.worker_id} ({worker.spec.model}): {worker.status}, turn {worker.turns}{tool}"
        line += f", {time.monotonic() - started:.1f} s"
        if live:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        elif worker.turns != shown and worker.turns:
            print(line, file=sys.stderr, flush=True)
            shown = worker.turns
    if live:
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def _print_worker(result: WorkerResult) -> None:
    took = f" in {result.duration_s:.2f} s" if result.duration_s is not None else ""
    print(f"worker {result.worker_id}: {result.status}{took}")
    print(f"model: {result.model or '(CLI default)'} ({result.model_source})")
    print(f"routing_verified: {str(result.routing_verified).lower()}")
    for line in result.routing_evidence:
        print(f"  - {line}")
    if result.error:
        print(f"error: {result.error}")
    print(f"transcript: {result.transcript_path}")
    if result.output:
        print(f"output:\n{result.output}")


def _doctor(store: ProfileStore, args: argparse.Namespace) -> int:
    from ..commands.doctor import check_routing, live_checks  # pydantic and the proxy checks: doctor's alone

    report = check_routing(store, os.environ, args.caste)
    if args.live and report.healthy:
        import anyio  # the live checks' event loop: off the hook's path

        report.checks += anyio.run(live_checks, store, os.environ)
        report.healthy = all(c.verdict != "fail" for c in report.checks)
    if args.json:
        _print_json(report)
        return 0 if report.healthy else 1
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        print(f"{check.name.ljust(width)}  {check.verdict.upper():4}  {check.detail}")
        if check.fix and check.verdict == "fail":
            print(f"{' ' * width}        fix: {check.fix}")
    print("\nRouting is healthy." if report.healthy else "\nRouting is NOT healthy: fix the failures above.")
    if not args.live:
        print("(aether-mcp doctor --live also spawns one one-turn worker per model; it costs a few tokens.)")
    return 0 if report.healthy else 1


def _workers(store: ProfileStore, args: argparse.Namespace) -> int:
    from ..commands.costs import finite
    from ..workers.spawn_log import log_path, read_running, read_spawn_log, settle_interrupted  # off the hook's path

    if args.action == "clean":
        return _clean_worktrees(store, everything=args.all)

    log = log_path(store.state_dir)
    settle_interrupted(store.state_dir, store.cwd)  # workers a server killed outright left: logged as interrupted
    running = read_running(store.state_dir)  # queued and running, of every server in this project
    entries = (running + read_spawn_log(log, args.limit))[: max(args.limit, len(running))]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print(f"No workers logged yet in {log}.")
        return 0
    rows = [("WHEN", "WORKER", "CASTE", "MODEL", "VERIFIED", "STATUS", "TIME", "TOKENS", "COST", "NODE", "DESCRIPTION")]
    for e in entries:
        usage = e.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        tokens = finite(sum(finite(v) or 0 for k, v in usage.items() if str(k).endswith("tokens")))
        duration, cost = finite(e.get("duration_s")), finite(e.get("cost_usd"))
        rows.append(
            (
                str(e.get("finished_at") or e.get("started_at") or "-").replace("+00:00", "Z"),
                str(e.get("worker_id") or "-"),
                str(e.get("caste")),
                str(e.get("model") or "(CLI default)"),
                _verified(e),
                str(e.get("status")),
                f"{duration:.1f} s" if duration is not None else "-",
                f"{tokens:,.0f}" if tokens else "-",
                f"${cost:.4f}" if cost is not None else "-",
                str(e.get("node") or "local"),
                str(e.get("description") or "")[:60],
            )
        )
    print(table(rows))
    return 0


def _verified(entry: dict[str, Any]) -> str:
    """yes; NO with the codes of what contradicts the model (routing_mismatches); `…` while it runs."""
    if entry.get("routing_verified") is True:
        return "yes"
    if entry.get("status") in ("queued", "running"):
        return "…"
    found = entry.get("routing_mismatches")
    codes = [str(m.get("code")) for m in found if isinstance(m, dict)] if isinstance(found, list) else []
    return "NO" + (f" ({', '.join(dict.fromkeys(codes))})" if codes else "")


def _top(store: ProfileStore, args: argparse.Namespace) -> int:
    try:
        from . import top  # Textual: loaded by this command alone
    except ImportError as exc:
        raise AetherError(
            f"aether-mcp top needs Textual ({exc.name or exc} is missing).", "Install it: pip install 'aether-mcp[top]'"
        ) from None
    return top.run(store.state_dir, store.cwd)


def _clean_worktrees(store: ProfileStore, everything: bool) -> int:
    from ..workers import worktree  # off the hook's path

    removed, stale = worktree.clean(worktree.repository_root(store.cwd), everything)
    for branch in stale:
        print(f"{branch}: its lock was stale (the server that held it is gone); unlocked")
    for branch in removed:
        print(f"removed {branch} and its worktree")
    if not removed:
        print("No worker worktrees to remove." if everything else "No merged worker worktrees to remove.")
    return 0


def _list(store: ProfileStore, args: argparse.Namespace) -> int:
    listing = store.caste_models(task=args.task)
    if args.json:
        _print_json(listing)
        return 0
    header = ("CASTE", "MODEL", "SOURCE", "AGENT", "PROVIDER", "CONTEXT")
    print(table([header] + [_row(entry) for entry in listing.castes]))
    print(f"\nProfile: {listing.path} ({listing.rule})")
    for problem in listing.agent_problems:
        print(f"Agent file not read in full: {problem}")
    if any(entry.override for entry in listing.castes):
        print("* user override (aether-mcp caste-models reset CASTE removes it)")
    return 0


def _row(entry: CasteModel) -> tuple[str, str, str, str, str, str]:
    meta = entry.metadata
    context = f"{meta.context_window:,}" if meta and meta.context_window else "-"
    source = entry.source + (f" ({entry.slot})" if entry.slot and entry.slot != entry.source else "")
    caste = entry.caste + ("*" if entry.override else "")
    agent = entry.agent.name if entry.agent else "-"
    return caste, _model(entry.model), source, agent, (meta.provider if meta else None) or "-", context


def _model(model: str | None) -> str:
    return model or "(CLI default)"


def _set(store: ProfileStore, args: argparse.Namespace) -> int:
    caste, model = _assignment(args.assignment)
    result = store.set_override(caste, model, create=args.create)
    if args.json:
        _print_json(result)
        return 0
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    now = _model(result.model) + (f" (slot {result.slot})" if result.slot else "")
    print(f"{result.caste}: {_model(result.previous)} -> {now} (override in {result.path})")
    return 0


def _assignment(words: list[str]) -> tuple[str, str]:
    if len(words) == 1 and "=" in words[0]:
        caste, _, model = words[0].partition("=")
        return caste, model
    if len(words) == 2:
        return words[0], words[1]
    raise AetherError("Use: aether-mcp caste-models set CASTE=MODEL (or set CASTE MODEL).")


def _reset(store: ProfileStore, args: argparse.Namespace) -> int:
    result = store.reset_override(args.caste)
    if args.json:
        _print_json(result)
        return 0
    now = result.model or "(CLI default)"
    if result.had_override:
        print(f"{result.caste}: override removed, now {now} ({result.path})")
    else:
        print(f"{result.caste}: had no override, still {now}")
    return 0


def _trust(store: ProfileStore, args: argparse.Namespace) -> int:
    results = [store.trust(args.path)] if args.path else store.trust_project()
    if args.json:
        _print_json({"trusted": [r.model_dump(mode="json") for r in results]})
        return 0
    for result in results:
        if result.settings:
            print(f"Trusted {result.path}: {', '.join(result.settings)}")
        else:
            print(f"{result.path} sets nothing that can run programs or send secrets: there was nothing to trust.")
    if any(r.settings for r in results):
        print("A change to any of these settings asks for trust again; set and reset keep it.")
    return 0


def _install(store: ProfileStore, args: argparse.Namespace) -> int:
    import shutil
    import textwrap

    from ..commands.install import command_on_path, install  # off the hook's path

    for change in install(store.cwd, shared=args.shared):
        print(f"{change.file}: {change.done}")
    profile_waits = store.untrusted()
    agents = store.untrusted_agents()
    if profile_waits or agents:
        print("These settings can run programs, send secrets or let workers do more than read:")
        if profile_waits:
            print(f"  {store.location.path}: {', '.join(profile_waits)}")
        width = min(shutil.get_terminal_size().columns, 120) - 1
        for grant, paths in _grants(store, agents).items():
            folders = {str(Path(path).parent) for path in paths}
            where = f" in {folders.pop()}/" if len(folders) == 1 else ""
            names = [Path(path).name if where else path for path in paths]
            print(f"  {len(paths)} agent file{'s' if len(paths) > 1 else ''}{where} would be trusted for {grant}:")
            print(
                textwrap.fill(
                    ", ".join(names), width, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
                )
            )
        question = (
            "Trust them? y: their castes run with what is listed. n (the default): those castes are refused "
            "until you run aether-mcp trust; the others run. [y/N] "
        )
        if args.trust or (sys.stdin.isatty() and input(question).strip().lower() in ("y", "yes")):
            for result in store.trust_project():
                if result.settings:
                    print(f"Trusted {result.path}")
        else:
            print("Not trusted: their castes are refused until you run aether-mcp trust.")
    if not command_on_path():
        print("Warning: aether-mcp is not on PATH; Claude Code starts the server and the hook by that name.")
    print("Start Claude Code here: each caste now runs through mcp__aether__spawn_worker on its own model.")
    return 0


def _grants(store: ProfileStore, agents: list[Any]) -> dict[str, list[str]]:
    """Each agent file by what trusting it would grant (its tools by name, hooks, MCP servers, permission mode),
    files that would be granted the same grouped, so the list stays short enough to judge."""
    groups: dict[str, list[str]] = {}
    for agent in agents:
        exposure = store.exposure(agent)
        grant = "; ".join(f"{name} {_granted(exposure[name])}" for name in store.waiting(agent))
        groups.setdefault(grant, []).append(
            str(agent.path.relative_to(store.cwd)) if agent.path.is_relative_to(store.cwd) else str(agent.path)
        )
    return groups


def _granted(value: Any) -> str:
    """A setting as the user judges it: tools by name, hook commands, MCP servers by name and command."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)[:300]
    return str(value)


def _uninstall(store: ProfileStore, args: argparse.Namespace) -> int:
    from ..commands.install import uninstall  # off the hook's path

    for change in uninstall(store.cwd, shared=args.shared):
        print(f"{change.file}: {change.done}")
    return 0


def _costs(store: ProfileStore, args: argparse.Namespace) -> int:
    # Off the hook's path, as each command's own modules are.
    from ..commands.costs import cost_table, since
    from ..workers.spawn_log import log_path, read_spawn_log

    rows = cost_table(reversed(read_spawn_log(log_path(store.state_dir), 1_000_000)), since(args.since))
    if args.json:
        _print_json({"rows": [row.as_json() for row in rows]})
        return 0
    if not rows:
        print(f"No workers logged{' since ' + args.since if args.since else ''} in {log_path(store.state_dir)}.")
        return 0
    lines = [("CASTE", "MODEL", "WORKERS", "REQUESTS", "TOKENS", "COST", "VERIFIED")]
    for row in rows:
        cost = f"${row.cost_usd:.4f}" + (f" (+{row.cost_unknown} unknown)" if row.cost_unknown else "")
        share = f"{row.share_verified:.0%}"
        lines.append(
            (row.caste, _model(row.model), str(row.workers), str(row.requests), f"{row.tokens:,}", cost, share)
        )
    print(table(lines))
    return 0


def _agents_sync(store: ProfileStore, args: argparse.Namespace) -> int:
    from ..commands.native import drift, sync  # the profile store (pydantic): off the hook's path

    changed = drift(store) if args.check else sync(store)
    for item in changed:
        verb = "differs" if args.check else "now"
        print(f"{item.path}: model {item.written or '(none)'} -> {item.wanted} ({item.caste}, {verb})")
    if args.check:
        print("Agent files match the routing." if not changed else f"{len(changed)} agent files differ.")
        return 1 if changed else 0
    print(f"{len(changed)} agent files changed." if changed else "Agent files already match the routing.")
    return 0


def _path(store: ProfileStore, args: argparse.Namespace) -> int:
    where = store.location
    if args.json:
        _print_json({"path": str(where.path), "rule": where.rule, "exists": Path(where.path).is_file()})
    else:
        print(f"{where.path} ({where.rule})")
    return 0


def _print_json(value: BaseModel | dict[str, Any]) -> None:
    data = value if isinstance(value, dict) else value.model_dump(mode="json")
    print(json.dumps(data, indent=2))
