"""The gateway as a colony uses it: started with the first proxied worker, a lease per worker, a key per holder.

A worker's lease is made when it is spawned (its budget and the requests it
makes are kept there). Its key, which its CLI sends as its credential, is
issued when it starts, or comes with the warm process it takes; whatever
holds a key releases it in the one step that ends the holder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import TaskGroup

from ..profile.schema import ModelMetadata
from .spec import WorkerSpec
from .wire import Key, KeyRouter, Lease, Prices

LOOPBACK = "127.0.0.1"  # the gateway module's HOST, named here without importing it

if TYPE_CHECKING:
    from .gateway import Gateway


class Leases:
    """The colony's gateway, and the keys that route requests through it.

    The gateway listens on loopback, and also where a Ray cluster's nodes reach this machine once a remote worker
    needs it: one listener per host, one set of keys for all."""

    def __init__(self) -> None:
        self._router = KeyRouter()
        self._gateways: dict[str, Gateway] = {}

    def start_gateway(self, group: TaskGroup, host: str = LOOPBACK) -> str:
        """The gateway's address on `host`, starting it in `group` on first use; a gateway that cannot start
        raises AetherError."""
        if host not in self._gateways:
            from .gateway import Gateway  # with uvicorn: a server with no proxied worker never loads it

            self._gateways[host] = Gateway(self._router, host=host)
        return self._gateways[host].start(group)

    def issue(self, lease: Lease) -> Key:
        """A key standing for `lease`, valid until its holder releases it."""
        return self._router.issue(lease)

    async def close(self) -> None:
        for gateway in self._gateways.values():
            await gateway.close()


def lease_for(spec: WorkerSpec, metadata: dict[str, ModelMetadata]) -> Lease:
    """What the gateway holds a worker's requests to: its endpoint and token, its models, its budget."""
    s = spec.settings
    assert s.endpoint is not None
    return Lease(
        worker_id=spec.worker_id,
        caste=spec.caste,
        upstream=s.endpoint,
        token=s.auth_token.get_secret_value() if s.auth_token else None,
        models=(spec.model, *s.fallback_models) if spec.model else None,
        prices={name: prices(meta) for name, meta in metadata.items()},
        max_tokens=s.max_tokens,
        max_budget_usd=s.max_budget_usd,
    )


def prices(meta: ModelMetadata) -> Prices:
    """A model's prices, from model_metadata."""
    return Prices(
        input=meta.input_cost_per_mtok,
        output=meta.output_cost_per_mtok,
        cache_read=meta.cache_read_cost_per_mtok,
        cache_write=meta.cache_write_cost_per_mtok,
    )
