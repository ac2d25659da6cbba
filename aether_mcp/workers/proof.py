"""What a finished worker proves: which model served it, whether it did its job, and nothing secret said about it.

The init line and `modelUsage` only repeat the model that was asked for; the
`model` of each assistant message is what the backend says answered. So a
worker is verified only when the backend answered at least once, and every
model the stream named is the one assigned (an alias and the dated ID it
stands for count as one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import sentences
from .preflight import Preflight
from .process import RunOutcome
from .result import WorkerResult
from .secrets import redact
from .spec import WorkerSpec
from .stream import StreamSummary

# Claude Code's aliases and the dated IDs a first-party backend answers with,
# e.g. `sonnet` -> `claude-sonnet-4-5-20250929`.
ALIASES = ("opus", "sonnet", "haiku")
OUTPUT_CAP = 20_000


@dataclass(frozen=True)
class RoutingVerdict:
    verified: bool
    evidence: list[str]
    problem: str | None


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
    return RoutingVerdict(verified, evidence, None if verified else "; ".join(problems))


def settle(
    result: WorkerResult, spec: WorkerSpec, outcome: RunOutcome, preflight: Preflight | None, secrets: list[str]
) -> None:
    """Fill in a finished worker's record: its status, its output, its proof, and what went wrong."""
    summary = outcome.summary
    verdict = judge(result.model, summary, preflight)
    result.models_reported = summary.models_reported()
    result.routing_verified = verdict.verified
    result.routing_evidence = verdict.evidence
    result.duration_s = round(outcome.duration_s, 3)
    result.num_turns = summary.num_turns if summary.num_turns is not None else summary.turns
    result.usage = summary.usage
    result.cost_usd = summary.cost_usd
    result.session_id = summary.session_id
    result.output = _capped(redact(summary.result_text, secrets), result.transcript_path)
    failure = describe_failure(spec, outcome)
    if outcome.timed_out:
        result.status = "timed_out"
    elif failure:
        result.status = "failed"
    else:
        result.status = "succeeded"
    routing = None if verdict.verified else f"Routing not verified: {verdict.problem}"
    result.error = redact(sentences(failure, routing), secrets) or None


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
    return None


def _capped(text: str | None, transcript: str | None) -> str | None:
    if text is None or len(text) <= OUTPUT_CAP:
        return text
    return text[:OUTPUT_CAP] + f"\n[... {len(text) - OUTPUT_CAP} more characters in {transcript}]"
