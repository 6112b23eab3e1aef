"""The client/core pair over a real pipe, with the core on a thread and a tiny model."""

from __future__ import annotations

import asyncio

import pytest

from triage_router.engine_server.engine import RequestRejected
from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.errors import EngineUnavailable
from triage_router.engine_server.sequence import SamplingParams
from tests.engine_server.conftest import tiny_engine

PROMPTS = [[5, 17, 33, 2 + i] for i in range(4)]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)


async def collect(client: EngineClient, request_id: str, prompt: list[int], params: SamplingParams) -> list[int]:
    tokens: list[int] = []
    async for out in client.generate(request_id, prompt, params):
        tokens.extend(out.token_ids)
    return tokens


def run_with(client: EngineClient, body) -> None:
    async def main() -> None:
        client.start()
        try:
            await body()
        finally:
            client.stop()

    asyncio.run(main())


def test_concurrent_streams_match_offline_generation(tiny_llama):
    expected = tiny_engine(tiny_llama).generate(PROMPTS, greedy(12))
    engine = tiny_engine(tiny_llama)
    client = EngineClient.in_thread(engine)

    async def body() -> None:
        got = await asyncio.gather(*(collect(client, f"r{i}", p, greedy(12)) for i, p in enumerate(PROMPTS)))
        assert got == expected
        assert client.stats["vllm:generation_tokens_total"] == 12 * len(PROMPTS)
        assert client.stats["vllm:num_requests_running"] == 0

    run_with(client, body)
    assert not engine.seqs


def test_leaving_a_stream_early_aborts_it_and_frees_its_blocks(tiny_llama):
    engine = tiny_engine(tiny_llama)
    client = EngineClient.in_thread(engine)

    async def body() -> None:
        stream = client.generate("r0", PROMPTS[0], greedy(200))
        await anext(stream)
        await stream.aclose()
        # The abort travels to the core; the core's next snapshot shows it gone.
        for _ in range(200):
            if client.stats["vllm:num_requests_running"] == 0 and client.stats["vllm:kv_cache_usage_perc"] == 0:
                break
            await asyncio.sleep(0.01)
        assert client.stats["vllm:num_requests_running"] == 0
        assert client.stats["vllm:generation_tokens_total"] < 200

    run_with(client, body)
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks and not engine.seqs


def test_a_request_the_core_rejects_fails_only_that_stream(tiny_llama):
    engine = tiny_engine(tiny_llama)
    client = EngineClient.in_thread(engine)

    async def body() -> None:
        too_long = [3] * engine.max_model_len  # skipped the HTTP side's check: the core refuses it too
        with pytest.raises(RequestRejected, match="context"):
            await collect(client, "long", too_long, greedy(4))
        assert len(await collect(client, "ok", PROMPTS[0], greedy(4))) == 4

    run_with(client, body)


def test_a_failed_step_fails_its_requests_and_the_core_keeps_serving(tiny_llama, monkeypatch):
    engine = tiny_engine(tiny_llama)
    client = EngineClient.in_thread(engine)
    real_step = engine.step
    calls = {"n": 0}

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real_step()

    monkeypatch.setattr(engine, "step", flaky_step)

    async def body() -> None:
        with pytest.raises(EngineUnavailable, match="boom"):
            await collect(client, "r0", PROMPTS[0], greedy(8))
        assert len(await collect(client, "r1", PROMPTS[1], greedy(3))) == 3

    run_with(client, body)
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death is the point
def test_a_core_that_goes_away_fails_open_streams_instead_of_hanging(tiny_llama):
    engine = tiny_engine(tiny_llama)
    client = EngineClient.in_thread(engine)

    async def body() -> None:
        stream = client.generate("r0", PROMPTS[0], greedy(500))
        await anext(stream)
        engine.step = _raise_system_exit  # the core's thread dies mid-run, as a killed process would
        with pytest.raises(EngineUnavailable, match="exited"):
            async for _ in stream:
                pass
        assert not client.alive
        with pytest.raises(EngineUnavailable):
            await collect(client, "r1", PROMPTS[1], greedy(2))

    run_with(client, body)


def _raise_system_exit():
    raise SystemExit
