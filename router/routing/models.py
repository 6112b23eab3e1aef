"""Models found, not only configured: each backend's own /v1/models is read at start-up and
every `upstream.models_refresh_s`, so that its LoRA adapters and embedding models route to it.
GET /v1/models answers the union, each model once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx
import msgspec

from triage_router.router.config import Config, ModelConfig
from triage_router.router.routing.backends import Backend, BackendPool

log = logging.getLogger("triage.models")


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


def configured_models(config: Config) -> list[str]:
    """Every model name the config promises: the backends' named models and [[models]]."""
    names = {name for backend in config.backends for name in backend.models if name != "*"}
    return sorted(names | {model.name for model in config.models})


class ModelRoutes:
    """Aliases and fallbacks from the config's [[models]]: which model names to try, in order,
    for the name a client asked for."""

    def __init__(self, models: list[ModelConfig]) -> None:
        self._chains: dict[str, tuple[str, ...]] = {}
        for model in models:
            served = model.serve_as or model.name
            self._chains[model.name] = (served, model.fallback) if model.fallback else (served,)

    def chain(self, asked: str) -> tuple[str, ...]:
        return self._chains.get(asked, (asked,))

    def names(self) -> list[str]:
        return list(self._chains)


class ModelCatalog:
    def __init__(self, pool: BackendPool, client: httpx.AsyncClient, refresh_s: float, timeout_s: float,
                 aliases: Sequence[str] = ()) -> None:
        self.pool = pool
        self.aliases = aliases
        self.client = client
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._cards: dict[str, list[ModelCard]] = {}
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read every backend's listing once. An unreachable backend keeps what it listed last."""
        await asyncio.gather(*(self._read(backend) for backend in self.pool.backends))

    async def _read(self, backend: Backend) -> None:
        headers = {"authorization": f"Bearer {backend.config.api_key}"} if backend.config.api_key else None
        try:
            response = await self.client.get(f"{backend.base_url}/v1/models", headers=headers, timeout=self.timeout_s)
            backend.answered = True
            response.raise_for_status()
            cards = msgspec.json.decode(response.content, type=_UpstreamModelList).data
        except (httpx.HTTPError, msgspec.DecodeError) as error:
            log.debug("backend %s: no model listing (%s)", backend.name, error)
            return
        self._cards[backend.name] = cards
        self.pool.set_listed_models(backend, frozenset(card.id for card in cards))

    def forget(self, backend: Backend) -> None:
        """A backend a reload removed: what it listed is no longer served here."""
        self._cards.pop(backend.name, None)

    async def start(self) -> None:
        """The first reading, before the router takes requests, then one every `refresh_s`."""
        await self.refresh()
        self._task = asyncio.ensure_future(self._refresh_periodically())

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def list_models(self) -> ModelList:
        cards: dict[str, ModelCard] = {}
        for backend in self.pool.backends:
            for card in self._cards.get(backend.name, []):
                cards.setdefault(card.id, card)
            for name in backend.config.models:
                if name != "*":
                    cards.setdefault(name, ModelCard(name, owned_by=backend.name))
        for name in self.aliases:
            cards.setdefault(name, ModelCard(name))
        return ModelList(sorted(cards.values(), key=lambda card: card.id))
