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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ..errors import AetherError
from ..profile.worker_settings import WorkerSettings

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
class Deployment:
    """One of the proxy's deployments, as LiteLLM's `/model/info` lists it."""

    id: str
    model_name: str  # the public name it serves
    model: str | None  # what it calls upstream (litellm_params.model), e.g. anthropic/claude-sonnet-4-5
    api_base: str | None
    provider: str | None

    def describe(self) -> str:
        return f"deployment {self.id} ({self.model or '?'} at {self.api_base or 'its provider'})"


def fetch_deployments(endpoint: str, token: str | None, timeout_s: float = TIMEOUT_S) -> dict[str, Deployment] | None:
    """LiteLLM's `GET /model/info`, by deployment id; None when the proxy does not answer it (not LiteLLM)."""
    url = endpoint.rstrip("/") + "/model/info"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (checked by fetch_models)
            data = json.loads(response.read(8 * 1024 * 1024))
    except (urllib.error.URLError, TimeoutError, OSError, ValueError):
        return None
    found = {}
    for item in data.get("data", []) if isinstance(data, dict) else []:
        if not isinstance(item, dict):
            continue
        params = _mapping(item.get("litellm_params"))
        info = _mapping(item.get("model_info"))
        ident, name = info.get("id"), item.get("model_name")
        if isinstance(ident, str) and isinstance(name, str):
            upstream = params.get("model")
            model = upstream if isinstance(upstream, str) else None
            provider = info.get("litellm_provider") or params.get("custom_llm_provider")
            if not isinstance(provider, str):
                provider = model.split("/", 1)[0] if model and "/" in model else None
            base = params.get("api_base")
            found[ident] = Deployment(ident, name, model, base if isinstance(base, str) else None, provider)
    return found


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Preflight:
    """What the proxy said before a spawn: whether it confirmed the route, in words for the evidence, and the
    deployments it lists (None: it did not say)."""

    confirmed: bool
    evidence: str
    deployments: dict[str, Deployment] | None = None


CacheKey = tuple[str, str | None]  # (endpoint, token)
T = TypeVar("T")


class ProxyChecker:
    """Preflight with a short cache, so a colony of spawns asks the proxy once."""

    async def before_spawn(self, settings: WorkerSettings, model: str | None) -> Preflight | None:
        """The preflight of a worker through a proxy (None without one), in a thread: it waits on the network."""
        if not settings.endpoint:
            return None
        token = settings.auth_token.get_secret_value() if settings.auth_token else None
        found: Preflight = await anyio.to_thread.run_sync(self.preflight, settings.endpoint, token, model)
        return found

    def __init__(self, ttl_s: float = CACHE_S) -> None:
        self._ttl = ttl_s
        self._cache: dict[CacheKey, tuple[float, ModelList]] = {}  # (endpoint, token): (when, list)
        self._deployments: dict[CacheKey, tuple[float, dict[str, Deployment] | None]] = {}
        self._lock = threading.Lock()

    def models(self, endpoint: str, token: str | None) -> ModelList:
        return self._fresh(self._cache, (endpoint, token), lambda: fetch_models(endpoint, token))

    def deployments(self, endpoint: str, token: str | None) -> dict[str, Deployment] | None:
        return self._fresh(self._deployments, (endpoint, token), lambda: fetch_deployments(endpoint, token))

    def _fresh(self, cache: dict[CacheKey, tuple[float, T]], key: CacheKey, fetch: Callable[[], T]) -> T:
        """The cached answer while it is younger than the TTL, else a new one. Errors are not cached: a proxy
        just started should work at once."""
        with self._lock:
            hit = cache.get(key)
        if hit and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        found = fetch()
        with self._lock:
            cache[key] = (time.monotonic(), found)
        return found

    def preflight(self, endpoint: str, token: str | None, model: str | None) -> Preflight:
        """Whether the proxy routes `model` for a spawn; raises ProxyError when the spawn must not go on."""
        checked = self._route(endpoint, token, model)
        return Preflight(checked.confirmed, checked.evidence, self.deployments(endpoint, token))

    def _route(self, endpoint: str, token: str | None, model: str | None) -> Preflight:
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
