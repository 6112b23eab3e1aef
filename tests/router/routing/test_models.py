from __future__ import annotations

import httpx
import pytest
import respx

from triage_router.router.routing.backends import BackendPool
from triage_router.router.config import BackendConfig
from triage_router.router.routing.models import ModelCatalog


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_union_of_named_and_listed_models_with_cache() -> None:
    pool = BackendPool([
        BackendConfig(name="a", url="http://a.test", models=["smol"]),
        BackendConfig(name="b", url="http://b.test", models=["*"]),
        BackendConfig(name="down", url="http://down.test", models=["*"]),
    ])
    with respx.mock() as mock:
        listed = mock.get("http://b.test/v1/models").mock(
            return_value=httpx.Response(200, json={"object": "list", "data": [{"id": "llama", "object": "model", "created": 5, "owned_by": "vllm"}, {"id": "smol", "object": "model", "created": 0, "owned_by": "vllm"}]})
        )
        mock.get("http://down.test/v1/models").mock(side_effect=httpx.ConnectError("refused"))
        async with httpx.AsyncClient() as client:
            catalog = ModelCatalog(pool, client, cache_s=60, timeout_s=1)
            first = await catalog.list_models()
            await catalog.list_models()
    assert [card.id for card in first.data] == ["llama", "smol"]
    assert listed.call_count == 1
