"""A live router with two backends that publish KV events on real ZeroMQ sockets: requests go
where the events say their prompt is, whatever this router sent where before."""

import asyncio
import re
import time

import httpx
import pytest

from tests.fakes.kv_event_publisher import FakeKVEventPublisher
from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream
from triage_router.engine_server.checkpoint import resolve_model_dir
from triage_router.policies.kv_events import BlockRemoved, BlockStored
from triage_router.router.routing.kv_events.prompt_tokens import PromptTokenizer

SYSTEM = " ".join(f"Clause {i}: the tenant's policy {i} applies to every order." for i in range(40))
BLOCK = 16


def body(question: str) -> dict:
    return {"model": "smol", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "max_tokens": 4}


@pytest.fixture(scope="module")
def tokenizer_dir():
    return resolve_model_dir("default")


def fleet_config(upstreams, publishers, tokenizer_dir) -> str:
    return "\n".join(f"""
[[backends]]
name = "{u.name}"
url = "{u.url}"
models = ["smol"]
tokenizer = "{tokenizer_dir}"
kv_events = {{ endpoint = "{p.endpoint}", replay_endpoint = "{p.replay_endpoint or ''}" }}
""" for u, p in zip(upstreams, publishers))


@pytest.fixture
def fleet(tokenizer_dir):
    upstreams = [FakeUpstream(name).start() for name in ("a", "b")]
    publishers = [FakeKVEventPublisher(), FakeKVEventPublisher(replay=False)]
    with running_proxy(fleet_config(upstreams, publishers, tokenizer_dir)) as proxy:
        yield proxy, dict(zip("ab", upstreams)), dict(zip("ab", publishers))
    for upstream in upstreams:
        upstream.stop()
    for publisher in publishers:
        publisher.close()


def metric(text: str, name: str, backend: str) -> float:
    found = re.search(rf'^{name}{{backend="{backend}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else -1.0


def wait_trusted(proxy, publishers) -> None:
    """ZeroMQ drops what is published before a subscriber joins: publish empty batches until
    both indexes are trusted."""
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"{proxy.url}/metrics").text
        if all(metric(text, "triage_kv_index_trusted", name) == 1 for name in publishers):
            return
        assert time.monotonic() < deadline, text
        for publisher in publishers.values():
            publisher.publish()
        time.sleep(0.05)


def stored_blocks(packed: bytes, first_hash: int) -> BlockStored:
    tokens = [int.from_bytes(packed[i:i + 4], "little") for i in range(0, len(packed) // (4 * BLOCK) * BLOCK * 4, 4)]
    hashes = list(range(first_hash, first_hash + len(tokens) // BLOCK))
    return BlockStored(hashes, None, tokens, BLOCK, None, "GPU", None)


def wait_blocks(proxy, backend: str, blocks: int) -> None:
    deadline = time.monotonic() + 10
    while metric(httpx.get(f"{proxy.url}/metrics").text, "triage_kv_index_blocks", backend) < blocks:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_requests_follow_the_events(fleet, tokenizer_dir):
    proxy, upstreams, publishers = fleet
    wait_trusted(proxy, publishers)
    # The system prompt's blocks, as b's events would report them once it has served it.
    prompt = asyncio.run(PromptTokenizer(tokenizer_dir).chat(body("Where is order 1?"))).packed
    held = stored_blocks(prompt[: len(prompt) * 9 // 10], 1000)
    publishers["b"].publish(held)
    wait_blocks(proxy, "b", len(held.block_hashes))
    decision = httpx.post(f"{proxy.url}/triage/explain/v1/chat/completions", json=body("Where is order 1?")).json()
    assert decision["cache"]["b"] == {"matched_tokens": len(held.token_ids),
                                      "share": round(len(held.token_ids) / (len(prompt) // 4), 4), "source": "kv_events"}
    assert decision["cache"]["a"]["matched_tokens"] == 0 and decision["cache"]["a"]["source"] == "kv_events"

    for question in ("Where is order 1?", "Where is order 2?", "Where is order 3?"):
        answer = httpx.post(f"{proxy.url}/v1/chat/completions", json=body(question))
        assert answer.status_code == 200 and answer.headers["x-triage-backend"] == "b"

    # b evicts them and a stores them: the next request moves, though this router sent a nothing.
    publishers["b"].publish(BlockRemoved(list(held.block_hashes), "GPU"))
    publishers["a"].publish(stored_blocks(prompt[: len(prompt) * 9 // 10], 5000))
    wait_blocks(proxy, "a", len(held.block_hashes))
    answer = httpx.post(f"{proxy.url}/v1/chat/completions", json=body("Where is order 4?"))
    assert answer.headers["x-triage-backend"] == "a"

    text = httpx.get(f"{proxy.url}/metrics").text
    assert 'triage_kv_events_total{backend="b",outcome="applied"}' in text
    assert re.search(r"^triage_prompt_tokenize_seconds_count \d", text, re.M)


def test_a_lost_message_hands_routing_to_the_approximate_index(fleet):
    proxy, upstreams, publishers = fleet
    wait_trusted(proxy, publishers)
    publishers["b"].publish(send=False)  # missed, and b has no replay endpoint
    publishers["b"].publish()
    deadline = time.monotonic() + 10
    while metric(httpx.get(f"{proxy.url}/metrics").text, "triage_kv_index_trusted", "b") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    text = httpx.get(f"{proxy.url}/metrics").text
    assert 'triage_kv_events_total{backend="b",outcome="lost"} 1.0' in text
    assert metric(text, "triage_kv_index_trusted", "a") == 1
    # Requests still flow.
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=body("hello")).status_code == 200


def test_two_replicas_agree_without_talking(fleet, tokenizer_dir):
    """A second replica with the same config sees the same events: a tenant's requests land on
    the backend holding its prompt whichever replica they pass through, though neither replica
    sent it there."""
    proxy, upstreams, publishers = fleet
    with running_proxy(fleet_config(list(upstreams.values()), list(publishers.values()), tokenizer_dir)) as second:
        for replica in (proxy, second):
            wait_trusted(replica, publishers)
        tokenizer = PromptTokenizer(tokenizer_dir)
        tenants, held = {}, {"a": 0, "b": 0}
        for tenant, holder in (("acme", "a"), ("globex", "b"), ("initech", "a")):
            system = f"You work for {tenant}. " + SYSTEM
            request = body("Where is my order?") | {"messages": [{"role": "system", "content": system},
                                                                  {"role": "user", "content": "Where is my order?"}]}
            prompt = asyncio.run(tokenizer.chat(request)).packed
            blocks = stored_blocks(prompt[: len(prompt) * 9 // 10], hash(tenant) % 10**9)
            publishers[holder].publish(blocks)
            tenants[tenant], held[holder] = (request, holder), held[holder] + len(blocks.block_hashes)
        for replica in (proxy, second):
            for holder, blocks in held.items():
                wait_blocks(replica, holder, blocks)
        for turn in range(3):
            for tenant, (request, holder) in tenants.items():
                replica = (proxy, second)[turn % 2]
                request["messages"][-1]["content"] = f"Where is my order {turn}?"
                answer = httpx.post(f"{replica.url}/v1/chat/completions", json=request)
                assert answer.headers["x-triage-backend"] == holder, (tenant, turn)
