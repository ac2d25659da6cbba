"""Talking to the proxy before a worker does: is it up, does it take the token, does it route the model.

The seed trusted a proxy that answered 401 because `/health` only shows a
listening port. Here the check is the route the workers need: `GET
/v1/models` with the workers' own token, which LiteLLM answers with the model
names it routes.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import AetherError

TIMEOUT_S = 1.5
CACHE_S = 30.0


class ProxyError(AetherError):
    """The proxy cannot serve a worker: down, refusing the token, or not routing the model."""


class ProxyUnreachable(ProxyError):
    """Nothing answers at the endpoint."""


class TokenRejected(ProxyError):
    """The proxy answers, but not to the workers' token."""


class ModelNotRouted(ProxyError):
    """The proxy lists its models, and this one is not among them."""


@dataclass(frozen=True)
class ModelList:
    """What `GET /v1/models` said: the routed names, or why there are none."""

    endpoint: str
    models: tuple[str, ...] | None  # None: the proxy gave no usable list
    status: int | None
    detail: str

    def routes(self, model: str) -> bool | None:
        """True/False when the list tells; None when it cannot."""
        if not self.models:
            return None
        return any(model == name or fnmatch.fnmatchcase(model, name) for name in self.models)


def fetch_models(endpoint: str, token: str | None, timeout_s: float = TIMEOUT_S) -> ModelList:
    """`GET <endpoint>/v1/models`; raises ProxyError when the proxy is down or rejects the token."""
    if not endpoint.startswith(("http://", "https://")):
        raise ProxyError(f"proxy.endpoint must be an http:// or https:// URL, not '{endpoint}'.")
    url = endpoint.rstrip("/") + "/v1/models"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (scheme checked above)
            status, body = response.status, response.read(4 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        said = _error_message(exc)
        if exc.code in (401, 403) or _AUTH_WORDS.search(said) or (token is None and exc.code >= 400):
            quoted = f": {said}" if said else ""
            raise TokenRejected(
                f"The proxy at {endpoint} rejected the workers' token (HTTP {exc.code}{quoted})",
                "Set proxy.auth_token in the profile (or the variable it names, such as LITELLM_AUTH_TOKEN) "
                "to a key the proxy accepts",
            ) from None
        return ModelList(endpoint, None, exc.code, f"GET /v1/models answered HTTP {exc.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProxyUnreachable(
            f"The proxy at {endpoint} is not reachable ({reason})",
            "Start it (for LiteLLM: `litellm --config config.yaml --port 4000`) "
            "or correct proxy.endpoint in the profile",
        ) from None
    try:
        data = json.loads(body)
        names = tuple(str(item["id"]) for item in data.get("data", []) if isinstance(item, dict) and "id" in item)
    except (json.JSONDecodeError, AttributeError, TypeError):
        return ModelList(endpoint, None, status, "GET /v1/models answered, but not with a model list")
    return ModelList(endpoint, names or None, status, f"GET /v1/models lists {len(names)} model(s)")


# LiteLLM refuses a key it cannot look up with HTTP 400 "No connected db" (no
# database) rather than 401, so the words matter as much as the status.
_AUTH_WORDS = re.compile(r"auth|api.?key|no_db_connection|no connected db|invalid.*(key|token)", re.IGNORECASE)


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The proxy's own words about a refusal, short and on one line."""
    try:
        body = json.loads(exc.read(65536) or b"{}")
    except (json.JSONDecodeError, OSError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return " ".join(str(error.get(k) or "") for k in ("type", "message")).strip()[:300]
    return ""


@dataclass(frozen=True)
class Preflight:
    """What the proxy said before a spawn: whether it confirmed the route, in words for the evidence."""

    confirmed: bool
    evidence: str


class ProxyChecker:
    """Preflight with a short cache, so a colony of spawns asks the proxy once."""

    def __init__(self, ttl_s: float = CACHE_S) -> None:
        self._ttl = ttl_s
        self._cache: dict[tuple[str, str | None], tuple[float, ModelList]] = {}  # (endpoint, token): (when, list)
        self._lock = threading.Lock()

    def models(self, endpoint: str, token: str | None) -> ModelList:
        key = (endpoint, token)
        with self._lock:
            hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        listing = fetch_models(endpoint, token)  # errors are not cached: a proxy just started should work at once
        with self._lock:
            self._cache[key] = (time.monotonic(), listing)
        return listing

    def preflight(self, endpoint: str, token: str | None, model: str | None) -> Preflight:
        """Whether the proxy routes `model` for a spawn; raises ProxyError when the spawn must not go on."""
        listing = self.models(endpoint, token)
        if model is None:
            return Preflight(False, f"preflight: proxy {endpoint} is up and takes the token; no model to check")
        routed = listing.routes(model)
        if routed is None:
            return Preflight(
                False, f"preflight: proxy {endpoint} is up and takes the token, but cannot tell: {listing.detail}"
            )
        if not routed:
            names = ", ".join(listing.models or ())
            raise ModelNotRouted(
                f"The proxy at {endpoint} does not route model '{model}'. It routes: {names}.",
                "Add the model to the proxy's model_list, or move the caste to a routed model "
                "(set_caste_model; on the command line, aether-mcp caste-models set)",
            )
        return Preflight(True, f"preflight: proxy {endpoint} routes '{model}' ({listing.detail})")
