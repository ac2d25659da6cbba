"""Reading a worker's stream-json output, line by line, into what it said."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The model name Claude Code gives the assistant messages it writes itself (API errors).
SYNTHETIC = "<synthetic>"


@dataclass
class StreamSummary:
    """What a worker's stream-json output said, line by line."""

    init_model: str | None = None
    answered_models: list[str] = field(default_factory=list)
    usage_models: list[str] = field(default_factory=list)
    turns: int = 0
    last_tool: str | None = None
    result_seen: bool = False
    result_text: str | None = None
    is_error: bool = False
    error_status: int | None = None
    subtype: str | None = None
    num_turns: int | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    structured_output: Any = None  # what the model gave the CLI's StructuredOutput tool, when a schema was asked
    permission_denials: list[str] = field(default_factory=list)
    malformed_lines: int = 0
    synthetic_messages: int = 0

    def feed(self, line: str) -> bool:
        """Take one line; True when it was a new assistant turn (worth a progress note)."""
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self.malformed_lines += 1
            return False
        if not isinstance(event, dict):
            self.malformed_lines += 1
            return False
        kind = event.get("type")
        self.session_id = event.get("session_id") or self.session_id
        if kind == "system" and event.get("subtype") == "init":
            self.init_model = _text(event.get("model"))
        elif kind == "assistant" and isinstance(event.get("message"), dict):
            return self._assistant(event["message"], nested=event.get("parent_tool_use_id") is not None)
        elif kind == "result":
            self._result(event)
        return False

    def _assistant(self, message: dict[str, Any], nested: bool) -> bool:
        model = _text(message.get("model"))
        if model == SYNTHETIC:  # the CLI's own error text, not an answer from any backend
            self.synthetic_messages += 1
            return False
        if model and model not in self.answered_models:
            self.answered_models.append(model)
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                self.last_tool = _text(block.get("name"))
        if not nested:
            self.turns += 1
        return not nested

    def _result(self, event: dict[str, Any]) -> None:
        self.result_seen = True
        self.subtype = _text(event.get("subtype"))
        self.is_error = bool(event.get("is_error"))
        status = event.get("api_error_status")
        self.error_status = status if isinstance(status, int) else None
        self.result_text = _text(event.get("result"))
        turns = event.get("num_turns")
        self.num_turns = turns if isinstance(turns, int) else None
        usage = event.get("usage")
        self.usage = {k: v for k, v in usage.items() if isinstance(v, int)} if isinstance(usage, dict) else None
        cost = event.get("total_cost_usd")
        self.cost_usd = float(cost) if isinstance(cost, int | float) else None
        model_usage = event.get("modelUsage")
        if isinstance(model_usage, dict):
            self.usage_models = [str(m) for m in model_usage]
        self.structured_output = event.get("structured_output")
        denials = event.get("permission_denials")
        if isinstance(denials, list):
            self.permission_denials = [str(d.get("tool_name")) for d in denials if isinstance(d, dict)]

    def models_reported(self) -> list[str]:
        """Every model the stream named, in first-seen order."""
        seen: list[str] = []
        for model in [self.init_model, *self.answered_models, *self.usage_models]:
            if model and model not in seen:
                seen.append(model)
        return seen


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def user_message(text: str) -> str:
    """`text` as the one stream-json line a CLI started with `--input-format stream-json` reads as a user turn."""
    return json.dumps({"type": "user", "message": {"role": "user", "content": text}}) + "\n"
