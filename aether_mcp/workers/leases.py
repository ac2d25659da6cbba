"""The gateway as a colony uses it: made with the first proxied worker, one lease (and key) per worker.

A lease is what the gateway holds a worker's requests to: the endpoint and
real token they go to, the models they may ask for, the budget and the
prices that measure it. The key that stands for a lease is valid from the
moment it is handed out until it is released, on every path a worker ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import TaskGroup

from ..profile.schema import ModelMetadata
from .spec import WorkerSpec

if TYPE_CHECKING:
    from .gateway import Gateway, Lease, Prices


class Leases:
    """The colony's one gateway and the keys it hands out."""

    def __init__(self) -> None:
        self._gateway: Gateway | None = None

    def _the_gateway(self) -> Gateway:
        if self._gateway is None:
            from .gateway import Gateway  # with uvicorn: a server with no proxied worker never loads it

            self._gateway = Gateway()
        return self._gateway

    async def url(self, group: TaskGroup) -> str:
        """The gateway's address, starting it on first use; a gateway that cannot start raises AetherError."""
        return await self._the_gateway().start(group)

    def lease(self, spec: WorkerSpec, metadata: dict[str, ModelMetadata]) -> tuple[str, Lease]:
        """A key for `spec`'s worker and the lease it stands for, valid until released."""
        lease = lease_for(spec, metadata)
        return self._the_gateway().lease(lease), lease

    def adopt(self, key: str, lease: Lease) -> None:
        """`key` (a warm worker's own) now carries `lease`."""
        self._the_gateway().adopt(key, lease)

    def release(self, key: str | None) -> None:
        """The key is refused from now on."""
        if key is not None and self._gateway is not None:
            self._gateway.release(key)

    async def close(self) -> None:
        if self._gateway is not None:
            await self._gateway.close()


def lease_for(spec: WorkerSpec, metadata: dict[str, ModelMetadata]) -> Lease:
    """What the gateway holds a worker's requests to: its endpoint and token, its models, its budget."""
    from .gateway import Lease  # see Leases._the_gateway

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
    from .gateway import Prices  # see Leases._the_gateway

    return Prices(
        input=meta.input_cost_per_mtok,
        output=meta.output_cost_per_mtok,
        cache_read=meta.cache_read_cost_per_mtok,
        cache_write=meta.cache_write_cost_per_mtok,
    )
