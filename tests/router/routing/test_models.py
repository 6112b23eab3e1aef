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
async def test_listed_models_route_and_the_union_lists_each_once() -> None:
    pool = BackendPool([
        BackendConfig(name="a", url="http://a.test", models=["smol"]),
        BackendConfig(name="b", url="http://b.test"),
        BackendConfig(name="down", url="http://down.test"),
    ])
    listing = {"object": "list", "data": [{"id": "llama", "object": "model", "created": 5, "owned_by": "vllm"},
                                          {"id": "smol", "object": "model", "created": 0, "owned_by": "vllm"}]}
    with respx.mock() as mock:
        mock.get("http://a.test/v1/models").mock(return_value=httpx.Response(404))
        listed = mock.get("http://b.test/v1/models").mock(return_value=httpx.Response(200, json=listing))
        mock.get("http://down.test/v1/models").mock(side_effect=httpx.ConnectError("refused"))
        async with httpx.AsyncClient() as client:
            catalog = ModelCatalog(pool, client, refresh_s=60, timeout_s=1)
            assert pool.serving("llama") == []  # nothing read yet
            await catalog.refresh()
            models = catalog.list_models()
            # b stops listing llama: it no longer routes there
            listed.mock(return_value=httpx.Response(200, json={"object": "list", "data": listing["data"][1:]}))
            await catalog.refresh()
    assert [card.id for card in models.data] == ["llama", "smol"]
    assert [b.name for b in pool.serving("smol")] == ["a", "b"]
    assert [b.name for b in pool.serving("llama")] == []
    assert pool.serving("typo") == []
    assert listed.call_count == 2
