"""Is routing healthy? The checks behind `aether-mcp doctor` and the `check_routing` tool.

Each check is a row with a verdict and, when it fails, the fix. A proxy that
answers `/health` but refuses the workers' token fails here, which is the
mistake the seed made silently.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..errors import AetherError, sentences
from ..flat_schema import FlatRecord
from ..hook_settings import COMMAND, WIRE_EVENTS, hook_command, shared_hook_command, wire_hook_command
from ..private_files import read_regular
from ..profile.catalog import CasteCatalog
from ..profile.schema import Profile, RaySection
from ..profile.store import ProfileStore
from ..workers.claude_cli import find_cli
from ..workers.preflight import ModelList, ProxyChecker, ProxyError, TokenRejected

Verdict = Literal["ok", "fail", "note"]
MAX_SETTINGS_BYTES = 16 * 1024 * 1024  # ~/.claude.json grows with every project Claude Code has seen


class Check(BaseModel):
    name: str = Field(description="What was checked.")
    verdict: Verdict = Field(description="ok, fail, or note (worth knowing, not a failure).")
    detail: str = Field(description="What the check found.")
    fix: str | None = Field(default=None, description="What to do about a failure.")


class RoutingReport(FlatRecord):
    healthy: bool = Field(description="True when no check failed.")
    checks: list[Check]


def check_routing(
    store: ProfileStore, environ: Mapping[str, str], caste: str | None = None, checker: ProxyChecker | None = None
) -> RoutingReport:
    """Profile, CLI, proxy, token, and each caste's route; stops early only when the profile is unusable."""
    checks: list[Check] = []
    where = store.location
    try:
        profile, _ = store.load()
    except AetherError as exc:
        checks.append(_failed("profile", exc, "Fix or replace the profile file."))
        return RoutingReport(healthy=False, checks=checks)
    checks.append(Check(name="profile", verdict="ok", detail=f"{where.path} (chosen by {where.rule})"))
    try:
        store.load_trusted()
    except AetherError as exc:  # nothing the untrusted settings name is run or contacted
        checks.append(_failed("trust", exc, f"aether-mcp trust {where.path}"))
        return RoutingReport(healthy=False, checks=checks)
    catalog = store.catalog()
    checks += _agent_checks(store, catalog)
    hooks = _hook_checks(store, catalog)
    checks += hooks
    if any(check.name == "hook" and check.verdict == "ok" for check in hooks):  # the castes rely on the server
        checks += _server_checks(store, environ)
    checks += _wire_checks(store, catalog, environ)
    checks.append(_cli_check(profile, environ))
    if profile.workers.ray is not None:
        checks += _cluster_checks(profile.workers.ray, environ)
    castes = [catalog.find(caste)] if caste is not None else catalog.names()
    checks += _route_checks(catalog, castes, checker or ProxyChecker(ttl_s=0))
    return RoutingReport(healthy=all(c.verdict != "fail" for c in checks), checks=checks)


def _agent_checks(store: ProfileStore, catalog: CasteCatalog) -> list[Check]:
    """How many agents are castes, each file that could not be read in full, and agents waiting for trust."""
    found = len(catalog.scan.agents)
    checks = [Check(name="agents", verdict="ok", detail=f"{found} Claude Code agents are castes")] if found else []
    checks += [Check(name="agent file", verdict="note", detail=problem) for problem in catalog.scan.problems]
    for agent in store.untrusted_agents():
        checks.append(
            Check(
                name=f"trust {agent.name}",
                verdict="fail",
                detail=f"{agent.path} sets {', '.join(store.waiting(agent))}, not yet trusted",
                fix=f"Review it, then run: aether-mcp trust {agent.path}",
            )
        )
    return checks


def _hook_checks(store: ProfileStore, catalog: CasteCatalog) -> list[Check]:
    """Whether the sub-agent hook install wrote runs and denies a caste's sub-agent call: one that cannot run
    lets every caste run natively, on the parent's model, with no word said."""
    from .install import hook_problem, installed_hooks  # the install module loads only for this check

    hooks = installed_hooks(store.cwd)
    if not hooks and not catalog.scan.agents:  # no agent the Task tool could start: nothing goes unrouted
        return []
    if not hooks:
        return [
            Check(
                name="hook",
                verdict="note",
                detail="not installed: sub-agent (Task) calls for castes run on the parent's model",
                fix="aether-mcp install",
            )
        ]
    caste = catalog.names()[0] if catalog.names() else None
    checks = []
    for path, command in hooks:
        # Only the commands install writes are run: a project's settings file must not make doctor run a program.
        known = command in (COMMAND, hook_command())
        problem = hook_problem(command, store.cwd, caste) if known else "it names another aether-mcp (not run)"
        if problem is None:
            checks.append(Check(name="hook", verdict="ok", detail=f"{path}: `{command}` runs, and routes {caste}"))
        else:
            checks.append(
                Check(
                    name="hook",
                    verdict="fail",
                    detail=f"{path}: `{command}` does not work: {problem}; castes would run unrouted",
                    fix="Run aether-mcp install again (it writes the hook with this installation's path)",
                )
            )
    return checks


def _server_checks(store: ProfileStore, environ: Mapping[str, str]) -> list[Check]:
    """What Claude Code will do with the project's server: find its command, and start it or not. With the hook
    on and the server off, every caste's call is stopped."""
    from .install import SERVER_NAME  # (loaded already, by the hook's check)

    project = store.cwd
    entry = _json_at(project / ".mcp.json", "mcpServers", SERVER_NAME)
    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
        fix = "aether-mcp install"
        return [Check(name="server", verdict="fail", detail=f"{project}/.mcp.json registers no aether server", fix=fix)]
    command = entry["command"]
    found = shutil.which(command, path=environ.get("PATH"))
    ours = Path(sys.executable).parent / "aether-mcp"
    checks = []
    if found is None:
        checks.append(
            Check(
                name="server command",
                verdict="fail",
                detail=f"Claude Code starts the server as `{command}`, which is not on this PATH",
                fix=f"Start claude where {ours.parent} is on PATH (activate the virtualenv), or reinstall aether-mcp",
            )
        )
    elif ours.exists() and Path(found).resolve() != ours.resolve():
        checks.append(
            Check(
                name="server command",
                verdict="fail",
                detail=f"`{command}` is {found}, another installation than the hook's ({ours})",
                fix=f"Put {ours.parent} first on PATH, or run aether-mcp install from the installation you use",
            )
        )
    else:
        checks.append(Check(name="server command", verdict="ok", detail=f"`{command}` is {found}"))
    return [*checks, _approval_check(project, environ, SERVER_NAME)]


def _approval_check(project: Path, environ: Mapping[str, str], name: str) -> Check:
    """Whether Claude Code will start the project's server: approved, declined (disabled) or not yet asked."""
    home = Path(environ.get("HOME") or Path.home())
    places = [
        _json_at(project / ".claude" / "settings.local.json"),
        _json_at(project / ".claude" / "settings.json"),
        _json_at(home / ".claude.json", "projects", str(project)),
    ]
    settings = [place for place in places if isinstance(place, dict)]
    if any(name in _names(place.get("disabledMcpjsonServers")) for place in settings):
        return Check(
            name="server approval",
            verdict="fail",
            detail="Claude Code was told not to use the project's aether server (declined at its first start, "
            "or disabled): every caste's call is stopped",
            fix="In claude, run /mcp and enable aether (or remove it from disabledMcpjsonServers), then restart",
        )
    if any(
        place.get("enableAllProjectMcpServers") is True or name in _names(place.get("enabledMcpjsonServers"))
        for place in settings
    ):
        return Check(name="server approval", verdict="ok", detail="Claude Code uses the project's aether server")
    return Check(
        name="server approval",
        verdict="note",
        detail="Claude Code will ask about the project's aether server at its next start here; Enter alone declines",
        fix='Choose "Use this and all future MCP servers in this project" (or "Use this MCP server")',
    )


def _json_at(path: Path, *keys: str) -> Any:
    """The value at `keys` in the JSON file `path` (a regular file, read within bounds); None when there is none."""
    try:
        data: Any = json.loads(read_regular(path, MAX_SETTINGS_BYTES)[0])
    except (OSError, ValueError, AetherError):
        return None
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _wire_checks(store: ProfileStore, catalog: CasteCatalog, environ: Mapping[str, str]) -> list[Check]:
    """`aether-mcp run`: the hooks that tell its gateway of each sub-agent, where a session's own requests would
    go, no Claude Code setting that would send them past the gateway, and a caste's sub-agent routed end to end
    (the installed SubagentStart hook run as Claude Code runs it, against a session's own router)."""
    from ..session.probe import probe_route  # the gateway's modules load only for this check
    from ..session.run import main_route, settings_overrides
    from .install import installed_hooks

    hooks = {event: installed_hooks(store.cwd, event, word) for event, word in WIRE_EVENTS.items()}
    missing = [event for event, found in hooks.items() if not found]
    if not catalog.scan.agents:
        return []
    if missing:
        detail = f"the {' and '.join(missing)} hook is not installed: it tells sub-agents apart by their prompts alone"
        return [Check(name="run (wire)", verdict="note", detail=detail, fix="aether-mcp install")]
    checks = []
    overriding = settings_overrides(store.cwd, environ)
    if overriding:
        checks.append(
            Check(
                name="run: settings",
                verdict="fail",
                detail=f"these would send a wrapped session's requests past the gateway: {'; '.join(overriding)}",
                fix="Move them into the shell's environment (aether-mcp run passes them on as the session's own)",
            )
        )
    try:
        main = main_route(environ, store)
    except AetherError as exc:
        return [*checks, _failed("run: the session's endpoint", exc, "Set ANTHROPIC_BASE_URL")]
    detail = f"a wrapped session's own requests would go to {main.upstream} (from {main.source})"
    checks.append(Check(name="run: the session's endpoint", verdict="ok", detail=detail))
    path, command = hooks["SubagentStart"][0]
    word = WIRE_EVENTS["SubagentStart"]
    if command not in (shared_hook_command(word), wire_hook_command(word)):  # a settings file names no program
        fix = "aether-mcp uninstall, then aether-mcp install"
        return [*checks, Check(name="run: a caste's route", verdict="fail", detail=f"{path}: another hook", fix=fix)]
    agent = next(iter(sorted(catalog.scan.agents.values(), key=lambda a: a.name)))
    route = probe_route(store, main, command, agent.name, environ)
    if route.problem is not None:
        fix = "Run the hook's command by hand to see why; aether-mcp install writes it again"
        checks.append(Check(name="run: a caste's route", verdict="fail", detail=route.problem, fix=fix))
    else:
        checks.append(Check(name="run: a caste's route", verdict="ok", detail=route.detail))
    return checks


def _failed(name: str, exc: AetherError, fix: str) -> Check:
    """A failed check from an error: its problem as the detail, and its own fix, else `fix`, said once."""
    return Check(name=name, verdict="fail", detail=sentences(exc.problem), fix=sentences(exc.fix or fix))


def _cli_check(profile: Profile, environ: Mapping[str, str]) -> Check:
    try:
        cli = find_cli(profile, environ)
    except AetherError as exc:
        return _failed("claude cli", exc, "Install Claude Code or set AETHER_CLAUDE_CLI.")
    version = cli.version()
    if version is None:
        return Check(
            name="claude cli",
            verdict="fail",
            detail=f"{cli.path} ({cli.rule}) did not answer --version",
            fix="Reinstall Claude Code or point AETHER_CLAUDE_CLI at a working CLI.",
        )
    return Check(name="claude cli", verdict="ok", detail=f"{cli.path} ({cli.rule}), {version}")


def _cluster_checks(settings: RaySection, environ: Mapping[str, str]) -> list[Check]:
    """The Ray cluster remote workers run on: reachable, its nodes alive, the CLI runnable on each, and each
    reaching where the gateway would listen."""
    from ..workers.cluster import RayCluster  # imports Ray: only a profile that names a cluster comes here

    cluster = RayCluster(settings, environ)
    try:
        looked = cluster.check_nodes()
        dead = [state.name for state in cluster.nodes() if not state.alive]
    except AetherError as exc:
        return [_failed("ray cluster", exc, "Start the cluster, or correct workers.ray.address")]
    except Exception as exc:  # noqa: BLE001 (Ray's own errors: reported, not raised)
        return [Check(name="ray cluster", verdict="fail", detail=f"{type(exc).__name__}: {exc}")]
    finally:
        cluster.close()  # names and versions are read: a colony beside it keeps its own connection
    checks = [
        Check(
            name="ray cluster",
            verdict="ok" if looked else "fail",
            detail=f"{settings.address}: {len(looked)} node(s) alive"
            + (f", {len(dead)} gone ({', '.join(dead)})" if dead else ""),
            fix=None if looked else "Start nodes with CPUs (ray start --address=HEAD) for the workers to run on",
        )
    ]
    for state, version, reach in looked:
        name = f"ray node {cluster.node_name(state.node_id)}"
        if version.startswith("!"):
            fix = "Install Claude Code on the node, or point workers.ray.claude_cli at it"
            checks.append(Check(name=name, verdict="fail", detail=version[1:], fix=fix))
        elif reach is not None:
            detail = f"it cannot reach the gateway's address {cluster.gateway_host} ({reach})"
            fix = "Set workers.ray.gateway_host to an address of this machine that the nodes reach"
            checks.append(Check(name=name, verdict="fail", detail=detail, fix=fix))
        else:
            checks.append(Check(name=name, verdict="ok", detail=f"{version}; it reaches the gateway's address"))
    return checks


def _route_checks(catalog: CasteCatalog, castes: list[str], checker: ProxyChecker) -> list[Check]:
    """Per endpoint: reachable, token accepted; per caste: its model routed."""
    checks: list[Check] = []
    listings: dict[str, ModelList | None] = {}
    for name in castes:
        settings = catalog.settings(name)
        model = catalog.resolve(name).model
        endpoint = settings.endpoint
        if endpoint is None:
            checks.append(
                Check(
                    name=f"route {name}",
                    verdict="note",
                    detail=f"{model or '(CLI default)'}: no proxy, so the worker uses the Claude Code CLI's own "
                    "backend and login",
                )
            )
            continue
        if endpoint not in listings:
            token = settings.auth_token.get_secret_value() if settings.auth_token else None
            listings[endpoint] = _probe(endpoint, token, checker, checks)
        listing = listings[endpoint]
        if listing is not None:
            checks.append(_route(name, model, listing))
    return checks


def _probe(endpoint: str, token: str | None, checker: ProxyChecker, checks: list[Check]) -> ModelList | None:
    """Two rows: does the proxy answer, and does it take the workers' token."""
    reachable, accepts = f"proxy reachable ({endpoint})", f"proxy accepts the token ({endpoint})"
    try:
        listing = checker.models(endpoint, token)
    except TokenRejected as exc:
        checks.append(Check(name=reachable, verdict="ok", detail="it answers"))
        checks.append(_failed(accepts, exc, "Set proxy.auth_token to a key it accepts."))
        return None
    except ProxyError as exc:
        checks.append(_failed(reachable, exc, "Start the proxy or fix proxy.endpoint."))
        return None
    checks.append(Check(name=reachable, verdict="ok", detail="it answers"))
    checks.append(Check(name=accepts, verdict="ok", detail=listing.detail))
    return listing


def _route(caste: str, model: str | None, listing: ModelList) -> Check:
    name = f"route {caste}"
    if model is None:
        return Check(
            name=name,
            verdict="fail",
            detail="no model: the worker would ask the proxy for the CLI's own default model",
            fix=f"Give the caste a model: aether-mcp caste-models set {caste}=MODEL",
        )
    routed = listing.routes(model)
    if routed is None:
        return Check(name=name, verdict="note", detail=f"{model}: the proxy cannot tell ({listing.detail})")
    if routed:
        return Check(name=name, verdict="ok", detail=f"{model} is routed")
    return Check(
        name=name,
        verdict="fail",
        detail=f"{model} is not routed; the proxy routes {', '.join(listing.models or ())}",
        fix=f"Add {model} to the proxy's model_list, or: aether-mcp caste-models set {caste}=ROUTED_MODEL",
    )


async def live_checks(store: ProfileStore, environ: Mapping[str, str]) -> list[Check]:
    """Spawn one one-turn worker per distinct model and check that its routing is verified."""
    from ..workers.colony import Colony  # the worker engine loads only for a live check
    from ..workers.proof import fix_for
    from ..workers.request import spawn_request

    catalog = store.catalog(trusted=True)
    first_caste: dict[str | None, str] = {}
    for name in catalog.names():
        first_caste.setdefault(catalog.resolve(name).model, name)
    checks = []
    async with Colony(store, environ) as colony:
        for model, caste in first_caste.items():
            name = f"live {model or '(CLI default)'} (as {caste})"
            try:
                worker = await colony.spawn(
                    spawn_request(caste=caste, task="Reply with the single word: ok", timeout_s=120)
                )
            except AetherError as exc:
                checks.append(Check(name=name, verdict="fail", detail=str(exc)))
                continue
            await worker.done.wait()
            result = worker.record()
            if result.routing_verified:
                checks.append(
                    Check(name=name, verdict="ok", detail=f"verified: {'; '.join(result.routing_evidence[-2:])}")
                )
            else:
                fixes = sentences(*dict.fromkeys(fix_for(m, caste) for m in result.routing_mismatches))
                checks.append(
                    Check(
                        name=name,
                        verdict="fail",
                        detail=result.error or result.status,
                        fix=fixes or f"See the worker's transcript: {result.transcript_path}",
                    )
                )
    return checks
