"""`aether-mcp costs`: what each caste and model cost, from the spawn log, as the gateway counted it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import AetherError

_AGO = re.compile(r"(\d+)([dhm])")


@dataclass
class CostRow:
    caste: str
    model: str | None
    workers: int = 0
    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown: int = 0  # workers whose cost no header or price told
    verified: int = 0

    @property
    def share_verified(self) -> float:
        return self.verified / self.workers if self.workers else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6), "share_verified": round(self.share_verified, 3)}


def since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`7d`, `24h`, `30m` ago, or an ISO date or time; None for no limit."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    ago = _AGO.fullmatch(text.strip())
    if ago:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[ago.group(2)]
        return now - timedelta(**{unit: int(ago.group(1))})
    when = moment(text.strip())
    if when is None:
        raise AetherError(f"--since {text!r} is neither a date (2026-11-01) nor an age (7d, 24h, 30m).")
    return when


def cost_table(entries: Iterable[dict[str, Any]], after: datetime | None = None) -> list[CostRow]:
    """One row per caste and model, most expensive first."""
    rows: dict[tuple[str, str | None], CostRow] = {}
    for entry in entries:
        if after is not None and not _after(entry.get("finished_at"), after):
            continue
        model = entry.get("model") if isinstance(entry.get("model"), str) else None
        caste = str(entry.get("caste"))
        row = rows.setdefault((caste, model), CostRow(caste, model))
        row.workers += 1
        row.requests += _count(entry.get("requests"))
        tokens = entry.get("tokens")
        row.tokens += sum(_count(v) for v in tokens.values()) if isinstance(tokens, dict) else 0
        cost = finite(entry.get("cost_usd"))
        if cost is not None:
            row.cost_usd += cost
        else:
            row.cost_unknown += 1
        row.verified += bool(entry.get("routing_verified"))
    return sorted(rows.values(), key=lambda r: (-r.cost_usd, r.caste, r.model or ""))


def _count(value: object) -> int:
    """A count from a log line: a damaged one (a string, a bool, a negative or huge number) counts nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_FIGURE else 0


def _after(stamp: Any, after: datetime) -> bool:
    when = moment(stamp)
    return when is not None and when >= after


def moment(value: object) -> datetime | None:
    """An ISO date or time from a log line or the command line (UTC when it names no zone); None if it is not."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


MAX_FIGURE = 1e15  # past any duration, cost or count a worker has: a larger one is not read


def finite(value: object) -> float | None:
    """A number read from a log line or a note, or None: not a bool, a string, NaN, infinity, or a number past
    MAX_FIGURE (an integer too large for a float among them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_FIGURE else None
