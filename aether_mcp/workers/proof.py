"""What a finished worker proves: which model served it, whether it did its job, and nothing secret said about it.

The init line and `modelUsage` only repeat the model that was asked for; the
`model` of each assistant message is what the backend says answered. So a
worker is verified only when the backend answered at least once, and every
model the stream named is the one assigned (an alias and the dated ID it
stands for count as one).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import sentences
from .preflight import Deployment, Preflight
from .process import RunOutcome
from .result import Mismatch, Status
from .secrets import redact
from .spec import WorkerSpec
from .stream import StreamSummary
from .wire import Lease, RequestRecord

# Claude Code's aliases and the dated IDs a first-party backend answers with,
# e.g. `sonnet` -> `claude-sonnet-4-5-20250929`.
ALIASES = ("opus", "sonnet", "haiku")
OUTPUT_PAGE = 20_000  # characters of the answer a result carries; get_worker reads the rest page by page
ENDPOINT = "(the endpoint: no deployment named)"  # requests_by_deployment's key for an answer that names none


@dataclass(frozen=True)
class WireTally:
    """What the gateway counted of a route's requests, judging nothing: live figures and the proof's data."""

    requests: int
    tokens: dict[str, int]
    cost_usd: float | None
    served: dict[tuple[str, str], int]  # (model asked, who answered in words) -> requests
    by_deployment: dict[str, int]
    served_by: list[str]  # the deployments that answered, in words
    fallback_used: list[str]  # models other than the assigned one that were asked for and answered

    @property
    def by_model(self) -> dict[str, int]:
        counted: Counter[str] = Counter()
        for (model, _), n in self.served.items():
            counted[model] += n
        return dict(sorted(counted.items()))


@dataclass(frozen=True)
class RoutingVerdict:
    """The judgment as data (what contradicts the model; with a gateway, its tally) and as sentences."""

    verified: bool
    evidence: list[str]
    mismatches: list[Mismatch] = field(default_factory=list)
    wire: WireTally | None = None

    @property
    def problem(self) -> str | None:
        return "; ".join(m.message for m in self.mismatches) or None


@dataclass(frozen=True)
class Settlement:
    """How a finished worker ended, and what its run proves; made from its run, changing nothing."""

    status: Status
    error: str | None
    answer: str | None  # the whole answer, redacted
    structured_output: Any
    verdict: RoutingVerdict
    models_reported: list[str]
    duration_s: float
    num_turns: int | None
    usage: dict[str, int] | None
    cost_usd: float | None  # the wire's count when there is a gateway, else what the CLI said
    session_id: str | None


def same_model(assigned: str, reported: str) -> str | None:
    """Why `reported` is `assigned` under another name, or None when it is not."""
    if reported == assigned:
        return "identical"
    if assigned in ALIASES and re.fullmatch(rf"claude-(?:[\d.-]+-)?{assigned}(?:-[\w.-]+)?", reported):
        return f"'{assigned}' is Claude Code's alias for {reported}"
    if re.fullmatch(rf"{re.escape(assigned)}-\d{{8}}", reported):
        return f"{reported} is the dated ID of {assigned}"
    return None


def judge(assigned: str | None, summary: StreamSummary, preflight: Preflight | None) -> RoutingVerdict:
    """Weigh the preflight (None: no proxy) and the stream against the assigned model."""
    evidence: list[str] = []
    problems: list[Mismatch] = []
    if preflight is not None:
        evidence.append(preflight.evidence)
        if not preflight.confirmed:
            problems.append(
                Mismatch(
                    code="proxy_unconfirmed",
                    asked=assigned,
                    message="the proxy did not confirm that it routes the model",
                )
            )
    if summary.init_model:
        evidence.append(f"init line: the CLI asked for {summary.init_model}")
    if summary.usage_models:
        evidence.append(f"modelUsage names {', '.join(summary.usage_models)} (repeats what was asked for)")
    if summary.answered_models:
        evidence.append(f"backend answered as {', '.join(summary.answered_models)}")
    else:
        problems.append(
            Mismatch(
                code="never_answered",
                asked=assigned,
                message="the backend never answered, so nothing shows which model served the worker",
            )
        )
    if summary.synthetic_messages:
        evidence.append(f"{summary.synthetic_messages} message(s) written by the CLI itself (an error, not an answer)")
    if summary.malformed_lines:
        evidence.append(f"{summary.malformed_lines} stream line(s) were not JSON and were skipped")

    reported = summary.models_reported()
    if assigned is None:
        chose = ", ".join(reported) or "nothing"
        problems.append(
            Mismatch(code="no_model", seen=chose, message=f"no model was assigned; the CLI chose {chose} itself")
        )
    else:
        for model in reported:
            why = same_model(assigned, model)
            if why is None:
                problems.append(
                    Mismatch(
                        code="other_model",
                        asked=assigned,
                        seen=model,
                        message=f"asked for {assigned}, but the stream names {model}",
                    )
                )
            elif why != "identical":
                evidence.append(f"alias: {why} (same model)")
    verified = not problems
    evidence.append("routing verified" if verified else "NOT verified: " + "; ".join(p.message for p in problems))
    return RoutingVerdict(verified, evidence, problems)


def tally(lease: Lease, deployments: dict[str, Deployment] | None, assigned: str | None) -> WireTally:
    """Count a route's requests: tokens by kind (every request's, as the budget counts them), cost, and who
    served what. Refused requests count toward tokens and requests only."""
    records = lease.records
    served: Counter[tuple[str, str]] = Counter()
    by_deployment: Counter[str] = Counter()
    for record in records:
        if record.refused is None and record.model is not None and not record.compaction_asked:
            served[(record.model, _place(record, deployments)[0])] += 1
            by_deployment[record.model_id or ENDPOINT] += 1
    return WireTally(
        requests=len(records),
        tokens={
            "input": sum(r.input_tokens for r in records),
            "output": sum(r.output_tokens for r in records),
            "cache_read": sum(r.cache_read_tokens for r in records),
            "cache_write": sum(r.cache_write_tokens for r in records),
        },
        cost_usd=lease.cost_usd(),
        served=dict(sorted(served.items())),
        by_deployment=dict(sorted(by_deployment.items())),
        served_by=sorted({place for _, place in served if place.startswith("deployment")}),
        fallback_used=sorted({m for m, _ in served if assigned is not None and m != assigned}),
    )


def judge_requests(
    assigned: str | None, lease: Lease, preflight: Preflight | None, provider: str | None, *, as_asked: bool = False
) -> RoutingVerdict:
    """Weigh what the gateway saw of a route: every request, what it went upstream with, and who the proxy says
    answered it. `as_asked`: the route has no model of its own (a session passed on as it asks), so each request
    is held to its own. A proxy that lies about its own deployments is beyond this."""
    deployments = preflight.deployments if preflight is not None else None
    counted = tally(lease, deployments, assigned)
    problems: list[Mismatch] = []
    for record in lease.records:
        if record.compaction_asked:
            continue  # answered by the gateway, so that Claude Code compacts: nothing was routed
        if record.refused is not None:
            route = f"{record.method} {record.path.split('?')[0]}"
            problems.append(
                Mismatch(code="refused", asked=record.model, seen=route, message=f"{route} refused: {record.refused}")
            )
        else:
            problems += _contradictions(record, deployments, provider)
    if not lease.records:
        problems.append(
            Mismatch(
                code="no_requests",
                asked=assigned,
                message="the worker made no request through the gateway, so it was sent somewhere else",
            )
        )
    elif not any(r.status == 200 and r.refused is None for r in lease.records):
        statuses = ", ".join(sorted({str(r.status) for r in lease.records}))
        problems.append(
            Mismatch(
                code="unanswered",
                asked=assigned,
                seen=statuses,
                message=f"no request was answered (HTTP {statuses}), so nothing shows which model served the worker",
            )
        )
    if assigned is None and not as_asked:
        problems.append(
            Mismatch(code="no_model", message="no model was assigned, so there is nothing to hold the requests to")
        )
    problems = list(dict.fromkeys(problems))
    evidence = [f"NOT verified: {p.message}" for p in problems]
    if preflight is not None:
        evidence.append(preflight.evidence)
    if deployments is None:
        evidence.append("the proxy lists no deployments (no LiteLLM /model/info), so only the models asked are checked")
    evidence += [f"{n} request(s) for {model}: {place}" for (model, place), n in counted.served.items()]
    by_model = counted.by_model
    evidence += [f"declared fallback {m} served {by_model[m]} request(s)" for m in counted.fallback_used]
    verified = not problems
    evidence.append("routing verified at the gateway" if verified else "routing NOT verified")
    return RoutingVerdict(verified, evidence, problems, counted)


def _place(record: RequestRecord, deployments: dict[str, Deployment] | None) -> tuple[str, Deployment | None]:
    """Who answered `record`, in words, and the listed deployment that did (None: not listed, or no list)."""
    if record.model_id is None:
        return "the endpoint (it names no deployment)", None
    found = deployments.get(record.model_id) if deployments is not None else None
    if found is not None:
        return found.describe(), found
    return f"deployment {record.model_id} ({record.api_base or '?'})", None


def _contradictions(
    record: RequestRecord, deployments: dict[str, Deployment] | None, provider: str | None
) -> list[Mismatch]:
    """What in an answered request contradicts the model it asked for."""
    found: list[Mismatch] = []
    asked, said = record.model, record.answered_model
    if said is not None and asked is not None and same_model(asked, said) is None:
        message = f"asked for {asked}, but the answer says {said} served it"
        found.append(Mismatch(code="answer_names_other", asked=asked, seen=said, message=message))
    if record.model_id is None or deployments is None:
        return found
    place, deployment = _place(record, deployments)
    if deployment is None:
        message = f"asked for {asked}, answered by {place}, which the proxy does not list"
        found.append(Mismatch(code="unlisted_deployment", asked=asked, seen=record.model_id, message=message))
    elif asked is not None and deployment.model_name != asked:
        fell = f" after {record.attempted_fallbacks} proxy-side fallback(s)" if record.attempted_fallbacks else ""
        message = f"asked for {asked}, answered{fell} by {place}, which serves {deployment.model_name}"
        found.append(Mismatch(code="deployment_serves_other", asked=asked, seen=deployment.model_name, message=message))
    elif asked is not None and (other := _another_model(deployment, asked, deployments)) is not None:
        message = f"asked for {asked}, answered by {place}, which calls {other}, another of the proxy's models"
        found.append(Mismatch(code="deployment_serves_other", asked=asked, seen=other, message=message))
    elif provider and deployment.provider and _provider_differs(provider, deployment.provider):
        message = f"{asked} is {provider}'s in model_metadata, but {place} is a {deployment.provider} one"
        found.append(Mismatch(code="provider_differs", asked=asked, seen=deployment.provider, message=message))
    return found


def _another_model(deployment: Deployment, asked: str, deployments: dict[str, Deployment]) -> str | None:
    """The model a deployment of `asked`'s group calls upstream, when that is another model: one the proxy also
    serves under its own name, or not the one its siblings in the group call. A group whose name is an alias
    (`fast` calling claude-haiku-4-5) is not judged by the name it calls."""
    upstream = deployment.model.rsplit("/", 1)[-1] if deployment.model else None
    if upstream is None or same_model(asked, upstream) is not None:
        return None
    others = {d.model_name for d in deployments.values()} - {asked}
    siblings = [d.model for d in deployments.values() if d.model_name == asked and d.model]
    named = any(same_model(asked, model.rsplit("/", 1)[-1]) is not None for model in siblings)
    return upstream if upstream in others or named else None


# LiteLLM prefixes that name the protocol a deployment speaks, not who serves it: Kimi, GLM and MiniMax are
# served as `anthropic/<model>` at the provider's Anthropic-compatible api_base, or as `openai/<model>`.
PROTOCOL_PREFIXES = frozenset({"anthropic", "openai", "openai_like", "custom_openai", "text-completion-openai"})
# One provider's names: model_metadata's (as Aether's profiles write them) and LiteLLM's.
PROVIDER_NAMES = {"kimi": "moonshot", "moonshotai": "moonshot", "zhipu": "zai", "zhipuai": "zai", "glm": "zai"}


def _provider_differs(named: str, deployment_provider: str) -> bool:
    """Whether a deployment's provider contradicts model_metadata's; a protocol prefix contradicts nothing."""
    if deployment_provider.lower() in PROTOCOL_PREFIXES:
        return False
    return _provider_key(named) != _provider_key(deployment_provider)


def _provider_key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())  # z.ai, Z-AI and zai are one
    return PROVIDER_NAMES.get(key, key)


def fix_for(mismatch: Mismatch, caste: str) -> str:
    """What to do about a mismatch, by its code."""
    model = mismatch.asked or "the caste's model"
    if mismatch.code in ("answer_names_other", "deployment_serves_other", "unlisted_deployment", "other_model"):
        served = mismatch.seen or "another model"
        return f"The proxy served {served} for {model}: correct {model}'s deployments in its model_list"
    if mismatch.code == "provider_differs":
        return f"Correct model_metadata.{model}.provider in the profile, or the proxy's deployment of {model}"
    if mismatch.code == "proxy_unconfirmed":
        return f"Make the proxy list {model} (GET /v1/models), or move the caste to a model it routes"
    if mismatch.code == "no_model":
        return f"Give the caste a model: aether-mcp caste-models set {caste}=MODEL"
    if mismatch.code == "no_requests":
        return "The worker went around the gateway: check workers.env_passthrough and the user's Claude Code settings"
    return "The backend did not answer as it should: see the proxy's log and the worker's transcript"


def outcome_status(*, timed_out: bool, over_budget: bool, failed: bool) -> Status:
    """How a worker that ran ended, by precedence: a timeout explains everything after it, a spent budget
    explains a failure it caused, and only a worker with no failure succeeded."""
    if timed_out:
        return "timed_out"
    if over_budget:
        return "budget_exceeded"
    return "failed" if failed else "succeeded"


def judge_outcome(
    spec: WorkerSpec, outcome: RunOutcome, preflight: Preflight | None, secrets: list[str], lease: Lease | None
) -> Settlement:
    """How a finished worker ended: its status, its proof, what went wrong, and its whole answer (redacted)."""
    summary = outcome.summary
    if lease is not None:
        verdict = judge_requests(spec.model, lease, preflight, spec.provider)
    else:
        verdict = judge(spec.model, summary, preflight)
        verdict.evidence.insert(0, "the worker went to its endpoint directly (no proxy): the evidence is its stream")
    failure = describe_failure(spec, outcome)
    structured = None
    if spec.output_schema is not None and failure is None:
        # The same redaction as the text answer: a secret the model put in a JSON value is taken out too.
        structured = json.loads(redact(json.dumps(summary.structured_output), secrets) or "null")
    over_budget = lease is not None and lease.budget_exceeded and not outcome.timed_out
    if over_budget:
        assert lease is not None
        failure = sentences(
            f"The worker reached its budget ({lease.over_budget()}); the gateway refused its next request",
            f"Give it a larger max_budget_usd or max_tokens, or set them in workers.castes.{spec.caste}",
        )
    routing = None if verdict.verified else f"Routing not verified: {verdict.problem}"
    return Settlement(
        status=outcome_status(timed_out=outcome.timed_out, over_budget=over_budget, failed=failure is not None),
        error=redact(sentences(failure, routing), secrets) or None,
        answer=redact(summary.result_text, secrets),
        structured_output=structured,
        verdict=verdict,
        models_reported=summary.models_reported(),
        duration_s=round(outcome.duration_s, 3),
        num_turns=summary.num_turns if summary.num_turns is not None else summary.turns,
        usage=summary.usage,
        cost_usd=verdict.wire.cost_usd if verdict.wire is not None else summary.cost_usd,
        session_id=summary.session_id,
    )


def describe_failure(spec: WorkerSpec, outcome: RunOutcome) -> str | None:
    """What went wrong, in words that say what to do; None when the worker did its job."""
    summary = outcome.summary
    if outcome.timed_out:
        return sentences(
            f"The worker ran past its timeout of {spec.settings.timeout_s:g} s and was killed with its process group",
            f"Give it a longer timeout, or set workers.castes.{spec.caste}.timeout_s in the profile",
        )
    if summary.is_error or (summary.result_seen and summary.subtype not in (None, "success")):
        status = summary.error_status
        detail = (summary.result_text or summary.subtype or "error").strip()[:500]
        if status in (401, 403):
            return sentences(
                f"The backend rejected the worker's credentials (HTTP {status}): {detail}", "Check the token"
            )
        if status == 400 and "model" in detail.lower():
            return sentences(f"The backend refused the model '{spec.model}' (HTTP 400): {detail}")
        if status is not None and status >= 500:
            return sentences(f"The backend failed (HTTP {status}): {detail}", "It may be overloaded; try again later")
        kind = f" ({summary.subtype})" if summary.subtype not in (None, "success") else ""
        return f"The worker reported an error{kind}: {detail}"
    if not summary.result_seen:
        tail = " | ".join(outcome.stderr_tail.strip().splitlines()[-3:]) or "no message"
        if outcome.exit_code:
            return f"The Claude Code CLI exited with status {outcome.exit_code}: {tail}"
        return f"The worker's stream ended without a result line ({tail}); see the transcript."
    if spec.output_schema is not None:
        misfit = schema_misfit(spec.output_schema, summary.structured_output)
        if misfit is not None:
            return f"The worker's answer does not fit output_schema: {misfit}"
    return None


def schema_misfit(schema: dict[str, Any], value: Any) -> str | None:
    """Why `value` does not fit `schema`, in one line; None when it does."""
    import jsonschema
    import referencing
    import referencing.exceptions

    if value is None:
        return "it gave no structured answer (the model never made a valid StructuredOutput call)"
    # An empty registry: references resolve inside the schema or not at all, never over the network.
    validator = jsonschema.validators.validator_for(schema)(schema, registry=referencing.Registry())
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except referencing.exceptions.Unresolvable as exc:
        return f"the schema has a reference that leads nowhere ({exc})"
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return f"at {where}: {error.message}"


def page(text: str | None, offset: int, limit: int) -> str | None:
    return None if text is None else text[offset : offset + limit]
