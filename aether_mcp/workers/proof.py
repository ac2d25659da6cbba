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
from typing import TYPE_CHECKING, Any

from ..errors import sentences
from .preflight import Deployment, Preflight
from .process import RunOutcome
from .result import WorkerResult
from .secrets import redact
from .spec import WorkerSpec
from .stream import StreamSummary

if TYPE_CHECKING:
    from .gateway import Lease, RequestRecord

# Claude Code's aliases and the dated IDs a first-party backend answers with,
# e.g. `sonnet` -> `claude-sonnet-4-5-20250929`.
ALIASES = ("opus", "sonnet", "haiku")
OUTPUT_PAGE = 20_000  # characters of the answer a result carries; get_worker reads the rest page by page
ENDPOINT = "(the endpoint: no deployment named)"  # requests_by_deployment's key for an answer that names none


@dataclass(frozen=True)
class RoutingVerdict:
    """The judgment as data (what contradicts the model, requests per model and deployment) and as sentences."""

    verified: bool
    evidence: list[str]
    mismatches: list[str] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)
    fallback_used: list[str] = field(default_factory=list)
    by_model: dict[str, int] = field(default_factory=dict)
    by_deployment: dict[str, int] = field(default_factory=dict)

    @property
    def problem(self) -> str | None:
        return "; ".join(self.mismatches) or None


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
    problems: list[str] = []
    if preflight is not None:
        evidence.append(preflight.evidence)
        if not preflight.confirmed:
            problems.append("the proxy did not confirm that it routes the model")
    if summary.init_model:
        evidence.append(f"init line: the CLI asked for {summary.init_model}")
    if summary.usage_models:
        evidence.append(f"modelUsage names {', '.join(summary.usage_models)} (repeats what was asked for)")
    if summary.answered_models:
        evidence.append(f"backend answered as {', '.join(summary.answered_models)}")
    else:
        problems.append("the backend never answered, so nothing shows which model served the worker")
    if summary.synthetic_messages:
        evidence.append(f"{summary.synthetic_messages} message(s) written by the CLI itself (an error, not an answer)")
    if summary.malformed_lines:
        evidence.append(f"{summary.malformed_lines} stream line(s) were not JSON and were skipped")

    reported = summary.models_reported()
    if assigned is None:
        problems.append(f"no model was assigned; the CLI chose {', '.join(reported) or 'nothing'} itself")
    else:
        for model in reported:
            why = same_model(assigned, model)
            if why is None:
                problems.append(f"asked for {assigned}, but the stream names {model}")
            elif why != "identical":
                evidence.append(f"alias: {why} (same model)")
    verified = not problems
    evidence.append("routing verified" if verified else "NOT verified: " + "; ".join(problems))
    return RoutingVerdict(verified, evidence, problems)


def judge_wire(assigned: str | None, lease: Lease, preflight: Preflight | None, provider: str | None) -> RoutingVerdict:
    """Weigh what the gateway saw: every request the worker made, what it asked for, and who the proxy says
    answered it. A proxy that lies about its own deployments is beyond this."""
    problems: list[str] = []
    deployments = preflight.deployments if preflight is not None else None
    served: Counter[tuple[str, str]] = Counter()
    by_deployment: Counter[str] = Counter()
    for record in lease.records:
        if record.refused is not None:
            problems.append(f"{record.method} {record.path.split('?')[0]} refused: {record.refused}")
            continue
        place = _served(record, deployments, provider, problems)
        if record.model is not None:
            served[(record.model, place)] += 1
            by_deployment[record.model_id or ENDPOINT] += 1
    if not lease.records:
        problems.append("the worker made no request through the gateway, so it was sent somewhere else")
    elif not any(r.status == 200 and r.refused is None for r in lease.records):
        statuses = ", ".join(sorted({str(r.status) for r in lease.records}))
        problems.append(f"no request was answered (HTTP {statuses}), so nothing shows which model served the worker")
    if assigned is None:
        problems.append("no model was assigned, so there is nothing to hold the requests to")
    evidence = [f"NOT verified: {p}" for p in dict.fromkeys(problems)]
    if preflight is not None:
        evidence.append(preflight.evidence)
    if deployments is None:
        evidence.append("the proxy lists no deployments (no LiteLLM /model/info), so only the models asked are checked")
    evidence += [f"{n} request(s) for {model}: {place}" for (model, place), n in sorted(served.items())]
    fallbacks = sorted({m for m, _ in served if assigned is not None and m != assigned})
    evidence += [
        f"declared fallback {m} served {sum(n for (x, _), n in served.items() if x == m)} request(s)" for m in fallbacks
    ]
    verified = not problems
    evidence.append("routing verified at the gateway" if verified else "routing NOT verified")
    places = sorted({place for _, place in served if place.startswith("deployment")})
    by_model: Counter[str] = Counter()
    for (model, _), n in served.items():
        by_model[model] += n
    return RoutingVerdict(
        verified,
        evidence,
        list(dict.fromkeys(problems)),
        places,
        fallbacks,
        dict(sorted(by_model.items())),
        dict(sorted(by_deployment.items())),
    )


def _served(
    record: RequestRecord, deployments: dict[str, Deployment] | None, provider: str | None, problems: list[str]
) -> str:
    """Who answered `record`, in words; a mismatch with what it asked for goes into `problems`."""
    said = record.answered_model
    if said is not None and record.model is not None and same_model(record.model, said) is None:
        problems.append(f"asked for {record.model}, but the answer says {said} served it")
    if record.model_id is None:
        return "the endpoint (it names no deployment)"
    found = deployments.get(record.model_id) if deployments is not None else None
    place = found.describe() if found is not None else f"deployment {record.model_id} ({record.api_base or '?'})"
    if deployments is None:
        return place
    if found is None:
        problems.append(f"asked for {record.model}, answered by {place}, which the proxy does not list")
    elif record.model is not None and found.model_name != record.model:
        fell = f" after {record.attempted_fallbacks} proxy-side fallback(s)" if record.attempted_fallbacks else ""
        problems.append(f"asked for {record.model}, answered{fell} by {place}, which serves {found.model_name}")
    elif provider and found.provider and provider.lower() != found.provider.lower():
        problems.append(f"{record.model} is {provider}'s in model_metadata, but {place} is a {found.provider} one")
    return place


def wire_facts(result: WorkerResult, lease: Lease) -> None:
    """What the gateway counted: requests, tokens by kind (every request's, as the budget counts them), cost."""
    records = lease.records
    result.requests = len(records)
    result.tokens = {
        "input": sum(r.input_tokens for r in records),
        "output": sum(r.output_tokens for r in records),
        "cache_read": sum(r.cache_read_tokens for r in records),
        "cache_write": sum(r.cache_write_tokens for r in records),
    }
    result.cost_usd = lease.cost_usd()


def settle(
    result: WorkerResult,
    spec: WorkerSpec,
    outcome: RunOutcome,
    preflight: Preflight | None,
    secrets: list[str],
    *,
    lease: Lease | None = None,
) -> str | None:
    """Fill in a finished worker's record: its status, its proof, what went wrong, and the first page of its
    answer. Returns the whole answer (redacted), for reading page by page."""
    summary = outcome.summary
    if lease is not None:
        verdict = judge_wire(result.model, lease, preflight, spec.provider)
    else:
        verdict = judge(result.model, summary, preflight)
        verdict.evidence.insert(0, "the worker went to its endpoint directly (no proxy): the evidence is its stream")
    result.models_reported = summary.models_reported()
    result.routing_verified = verdict.verified
    result.routing_evidence = verdict.evidence
    result.duration_s = round(outcome.duration_s, 3)
    result.num_turns = summary.num_turns if summary.num_turns is not None else summary.turns
    result.usage = summary.usage
    result.cost_usd = summary.cost_usd
    result.served_by, result.fallback_used = verdict.served_by, verdict.fallback_used
    result.routing_mismatches = verdict.mismatches
    result.requests_by_model, result.requests_by_deployment = verdict.by_model, verdict.by_deployment
    if lease is not None:
        wire_facts(result, lease)
    result.session_id = summary.session_id
    answer = redact(summary.result_text, secrets)
    result.output, result.output_chars = page(answer, 0, OUTPUT_PAGE), len(answer) if answer is not None else None
    failure = describe_failure(spec, outcome)
    if spec.output_schema is not None and failure is None:
        # The same redaction as the text answer: a secret the model put in a JSON value is taken out too.
        result.structured_output = json.loads(redact(json.dumps(summary.structured_output), secrets) or "null")
    if outcome.timed_out:
        result.status = "timed_out"
    elif lease is not None and lease.budget_exceeded:
        result.status = "budget_exceeded"
        failure = sentences(
            f"The worker reached its budget ({lease.over_budget()}); the gateway refused its next request",
            f"Give it a larger max_budget_usd or max_tokens, or set them in workers.castes.{spec.caste}",
        )
    elif failure:
        result.status = "failed"
    else:
        result.status = "succeeded"
    routing = None if verdict.verified else f"Routing not verified: {verdict.problem}"
    result.error = redact(sentences(failure, routing), secrets) or None
    return answer


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
