"""GET /v1/models: the union of the models every backend serves."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec

from triage_router.router.routing.backends import Backend, BackendPool


class ModelCard(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "triage"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class _UpstreamModelList(msgspec.Struct):
    data: list[ModelCard]


class ModelCatalog:
    """Named models come from the config; a wildcard backend is asked for its own list."""

    def __init__(self, pool: BackendPool, client: httpx.AsyncClient, cache_s: float, timeout_s: float) -> None:
        self.pool = pool
        self.client = client
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._listed: dict[str, tuple[float, list[ModelCard]]] = {}

    async def list_models(self) -> ModelList:
        cards: dict[str, ModelCard] = {}
        wildcards = [backend for backend in self.pool.backends if "*" in backend.config.models]
        for listing in await asyncio.gather(*(self._upstream_models(backend) for backend in wildcards)):
            for card in listing:
                cards.setdefault(card.id, card)
        for backend in self.pool.backends:
            for name in backend.config.models:
                if name != "*":
                    cards.setdefault(name, ModelCard(name, owned_by=backend.name))
        return ModelList(sorted(cards.values(), key=lambda card: card.id))

    async def _upstream_models(self, backend: Backend) -> list[ModelCard]:
        now = time.monotonic()
        cached = self._listed.get(backend.name)
        if cached is not None and now - cached[0] < self.cache_s:
            return cached[1]
        headers = {"authorization": f"Bearer {backend.config.api_key}"} if backend.config.api_key else None
        try:
            response = await self.client.get(f"{backend.base_url}/v1/models", headers=headers, timeout=self.timeout_s)
            response.raise_for_status()
            cards = msgspec.json.decode(response.content, type=_UpstreamModelList).data
        except (httpx.HTTPError, msgspec.DecodeError):
            # An unreachable backend lists nothing; the others still answer.
            cards = []
        self._listed[backend.name] = (now, cards)
        return cards
