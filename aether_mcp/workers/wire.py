"""What the gateway holds requests to, and records of them: light data types, with no server in them.

A `Lease` is a route at the gateway: where its requests go (the endpoint and
the real token), the models they may ask for, what they may spend, and what
they did. A `Router` is the one place that decides which lease a request
takes. Today that is a worker's key (`KeyRouter`), handed out as a `Key`
that its holder releases when it ends.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio


@dataclass
class Prices:
    """US dollars per million tokens, from model_metadata."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, record: RequestRecord) -> float | None:
        if self.input is None or self.output is None:
            return None
        total = record.input_tokens * self.input + record.output_tokens * self.output
        total += record.cache_read_tokens * (self.cache_read if self.cache_read is not None else self.input)
        total += record.cache_write_tokens * (self.cache_write if self.cache_write is not None else self.input)
        return total / 1_000_000


@dataclass
class RequestRecord:
    """One request made through the gateway."""

    method: str
    path: str
    model: str | None  # the model the request went upstream with (what the route holds it to)
    asked_model: str | None = None  # what the client's body named, when the route sent another model in its place
    status: int | None = None
    ttfb_s: float | None = None
    duration_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    answered_model: str | None = None  # the body's `model` (LiteLLM writes the name it was called with)
    stop_reason: str | None = None  # why the answer ended (end_turn: the conversation's turn is over)
    model_id: str | None = None  # x-litellm-model-id: the deployment that served it
    api_base: str | None = None
    model_group: str | None = None
    attempted_fallbacks: int = 0
    cost_usd: float | None = None
    cost_unreadable: bool = False  # the proxy told a cost that cannot be one: unknown, not priced
    refused: str | None = None  # why the gateway did not forward it
    # The gateway answered "prompt is too long" itself: the conversation outgrew its model's window, and Claude
    # Code compacts on that answer. Not forwarded, and not a refusal of the route.
    compaction_asked: bool = False

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


def is_message(path: str) -> bool:
    """A Messages request: the ones that cost tokens (count_tokens and model listings do not)."""
    return path.split("?", maxsplit=1)[0].rstrip("/").endswith("/v1/messages")


@dataclass
class Lease:
    """One route: where its requests go, what they may ask for, what they may spend, what they did."""

    worker_id: str
    caste: str
    upstream: str
    token: str | None
    models: tuple[str, ...] | None  # the caste's model first, then its declared fallbacks; None: any
    # Set: every request goes upstream on this model, whatever model its body names (routing at the wire).
    send_model: str | None = None
    # How the real token goes upstream: "x-api-key" or "authorization"; None: as the client sent its key.
    credential: str | None = None
    prices: dict[str, Prices] = field(default_factory=dict)
    max_tokens: int | None = None
    max_budget_usd: float | None = None
    records: list[RequestRecord] = field(default_factory=list)
    budget_exceeded: bool = False
    spent_tokens: int = 0
    spent_usd: float = 0.0
    cost_unknown: bool = False  # some answered request's cost was told by neither the proxy nor model_metadata
    # A budgeted route's Messages requests go one at a time: each is checked against what the ones before it
    # spent, so side-by-side requests cannot all pass the check before any is counted.
    turn: anyio.Lock = field(default_factory=anyio.Lock, repr=False)
    # model_metadata's window of the model its requests are sent on, when the route sends another than asked.
    context_window: int | None = None
    # The last answered Messages request: its tokens (prompt and answer, as the usage told) and body's bytes.
    context_seen: tuple[int, int] | None = None
    # Told when a request starts and when it ends: the colony publishes the worker's live figures.
    on_change: Callable[[], object] | None = field(default=None, repr=False)

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @property
    def budgeted(self) -> bool:
        return self.max_tokens is not None or self.max_budget_usd is not None

    def count(self, record: RequestRecord) -> None:
        """Add a finished request to what the route has spent (kept as totals: checked before every request)."""
        self.spent_tokens += record.tokens
        if record.refused is None and record.status == 200 and is_message(record.path):
            if record.cost_usd is None:
                self.cost_unknown = True
            else:
                self.spent_usd += record.cost_usd

    def cost_usd(self) -> float | None:
        """What the route spent, from the wire; None when a request's cost is unknown."""
        return None if self.cost_unknown else round(self.spent_usd, 6)

    def prompt_estimate(self, body_bytes: int) -> int | None:
        """About how many tokens a prompt of `body_bytes` holds: the last answered request's, and a token for
        every 4 bytes the body has grown since (None before any was answered)."""
        if self.context_seen is None:
            return None
        tokens, previous = self.context_seen
        return max(0, tokens + (body_bytes - previous) // 4)

    def over_budget(self) -> str | None:
        if self.max_tokens is not None and self.spent_tokens >= self.max_tokens:
            return f"it has used {self.spent_tokens:,} tokens of its max_tokens {self.max_tokens:,}"
        spent = self.cost_usd()
        if self.max_budget_usd is not None and spent is None:  # never a budget quietly lapsed
            return "an answer's cost was told by neither the proxy nor prices: its max_budget_usd cannot be kept"
        if self.max_budget_usd is not None and spent is not None and spent >= self.max_budget_usd:
            return f"it has spent ${spent:.4f} of its max_budget_usd ${self.max_budget_usd:g}"
        return None


class Router(Protocol):
    """Which route a request takes, from its headers (lower-cased names) and its body's JSON fields (None: no
    JSON object); None: no route, refused."""

    def route(self, headers: Mapping[str, str], fields: Mapping[str, Any] | None) -> Lease | None: ...


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request carries as its credential: x-api-key, else a Bearer authorization."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()


class KeyRouter:
    """Routes a request by the key it carries as its credential: each key stands for one lease."""

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}

    def route(self, headers: Mapping[str, str], fields: Mapping[str, Any] | None = None) -> Lease | None:
        return self._leases.get(presented_key(headers))

    def issue(self, lease: Lease) -> Key:
        """A new key for `lease`, valid until its holder releases it."""
        return Key(self._leases, lease)


class Key:
    """A holder's key at the gateway (a worker's, or a warm process's). Valid from its issue until `release`,
    which the one step that ends its holder calls."""

    def __init__(self, table: dict[str, Lease], lease: Lease) -> None:
        self.value = "aether-" + secrets.token_urlsafe(24)
        self._table = table
        table[self.value] = lease

    def carry(self, lease: Lease) -> None:
        """From now on the key stands for `lease` (a warm process's key, once a worker takes the process)."""
        if self.value in self._table:
            self._table[self.value] = lease

    @property
    def released(self) -> bool:
        return self.value not in self._table

    def release(self) -> None:
        """The key is refused from now on."""
        self._table.pop(self.value, None)
