"""What a worker's own stream proves about the model that served it.

The init line and `modelUsage` only repeat the model that was asked for; the
`model` of each assistant message is what the backend says answered. So a
worker is verified only when the backend answered at least once, and every
model the stream named is the one assigned (an alias and the dated ID it
stands for count as one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .workers import StreamSummary

# Claude Code's aliases and the dated IDs a first-party backend answers with,
# e.g. `sonnet` -> `claude-sonnet-4-5-20250929`.
ALIASES = ("opus", "sonnet", "haiku")


@dataclass(frozen=True)
class Verdict:
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


def judge(assigned: str | None, summary: StreamSummary, preflight: tuple[bool, str] | None) -> Verdict:
    """Weigh the preflight (None: no proxy) and the stream against the assigned model."""
    evidence: list[str] = []
    problems: list[str] = []
    if preflight is not None:
        confirmed, said = preflight
        evidence.append(said)
        if not confirmed:
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
    return Verdict(verified, evidence, None if verified else "; ".join(problems))
