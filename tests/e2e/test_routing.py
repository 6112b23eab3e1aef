"""Routing through a live proxy: priority passthrough, placement explanations, the queue."""

from __future__ import annotations

import socket

import httpx

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}


def test_priority_field_goes_only_to_priority_scheduling_backends(upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    config = (
        f'[[backends]]\nname = "alpha"\nurl = "{upstream.url}"\nmodels = ["smol"]\n'
        f'scheduling = "priority"\npriority_map = [-10, -5, 0, 5, 10]\n'
        f'[[backends]]\nname = "beta"\nurl = "{second_upstream.url}"\nmodels = ["big"]\n'
        '[priority]\nanonymous_max_priority = 0\n'  # trusted clients: the header's level is taken as is
    )
    with running_proxy(config) as proxy:
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "1"})
        httpx.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "model": "big", "extra": [1]},
                   headers={"x-priority": "1"})
    # The level's value dominates, the predicted output length orders work within the level.
    predicted = int(reply.headers["x-triage-predicted-tokens"])
    sent_priority = upstream.requests[-1].json()
    assert sent_priority["priority"] == -5 * 1_000_000 + predicted and sent_priority["messages"] == CHAT["messages"]
    assert "predicted_output_tokens" not in sent_priority
    fcfs = second_upstream.requests[-1]
    assert "priority" not in fcfs.json() and fcfs.json()["extra"] == [1]
    # Untouched bytes for backends that need no change.
    assert fcfs.body == httpx.Request("POST", "/", json={**CHAT, "model": "big", "extra": [1]}).content


def test_the_level_alone_goes_where_length_is_turned_off_and_our_engine_gets_prediction_and_tenant(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    config = (
        f'[[backends]]\nname = "alpha"\nurl = "{upstream.url}"\nmodels = ["smol"]\n'
        f'scheduling = "priority"\npriority_map = [-10, -5, 0, 5, 10]\npriority_with_length = false\n'
        f'[[backends]]\nname = "beta"\nkind = "engine"\nurl = "{second_upstream.url}"\nmodels = ["big"]\n'
        f'scheduling = "priority"\n'
    )
    with running_proxy(config) as proxy:
        httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "3"})
        reply = httpx.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "model": "big"},
                           headers={"x-priority": "3", "x-tenant-id": "acme"})
    assert upstream.requests[-1].json()["priority"] == 5
    engine = second_upstream.requests[-1].json()
    assert engine["priority"] == 3
    assert engine["predicted_output_tokens"] == int(reply.headers["x-triage-predicted-tokens"]) > 0
    assert engine["tenant"] == "acme"  # for the engine's own fair share
    assert "tenant" not in upstream.requests[-1].json()


def test_placement_is_explained_on_request(upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    config = "".join(f'[[backends]]\nname = "{u.name}"\nurl = "{u.url}"\nmodels = ["smol"]\n' for u in (upstream, second_upstream))
    long_chat = {"model": "smol", "messages": [{"role": "system", "content": "Be brief. " * 200}, {"role": "user", "content": "Hi"}]}
    with running_proxy(config) as proxy:
        first = httpx.post(f"{proxy.url}/v1/chat/completions", json=long_chat, headers={"x-triage-debug": "1"})
        second = httpx.post(f"{proxy.url}/v1/chat/completions", json=long_chat, headers={"x-triage-debug": "1"})
        plain = httpx.post(f"{proxy.url}/v1/chat/completions", json=long_chat)
    assert first.headers["x-triage-placement"].startswith("cache-affinity: no useful match")
    assert "longest prefix match" in second.headers["x-triage-placement"]
    assert second.headers["x-triage-backend"] == first.headers["x-triage-backend"]
    assert "x-triage-placement" not in plain.headers


def test_a_saturated_fleet_queues_then_refuses_with_retry_after(upstream: FakeUpstream) -> None:
    upstream.mode = "hang"
    config = (
        f'[[backends]]\nname = "alpha"\nurl = "{upstream.url}"\nmodels = ["smol"]\nmax_load = 1\n'
        "[admission]\nmax_queued = 1\nretry_after_s = 2\n"
    )
    with running_proxy(config) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        body = b'{"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}'
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                   + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        with socket.create_connection((host, int(port))) as holder, socket.create_connection((host, int(port))) as waiter:
            holder.sendall(request)
            assert upstream.received.wait(10)
            waiter.sendall(request)
            # The queue holds one request; wait until the waiter is in it.
            for _ in range(200):
                if 'triage_queue_length{priority="2"} 1.0' in httpx.get(f"{proxy.url}/metrics").text:
                    break
            refused = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
            assert refused.json()["error"]["code"] == "queue_full"
        # Both clients hung up: the waiter left the queue at once, the holder's upstream call was cancelled.
        assert upstream.disconnected.wait(10)
        for _ in range(200):
            metrics = httpx.get(f"{proxy.url}/metrics").text
            if 'triage_queue_length{priority="2"} 0.0' in metrics:
                break
        assert 'triage_queue_length{priority="2"} 0.0' in metrics
        assert [r.method for r in upstream.requests] == ["POST"]


def test_prompt_cache_key_and_user_keep_a_conversation_on_one_backend_in_every_replica(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    # Two router replicas with the same config, no shared state: the keys clients already send
    # (OpenAI's prompt_cache_key, else user) pin each conversation to the same backend in both.
    config = "".join(f'[[backends]]\nname = "{u.name}"\nurl = "{u.url}"\nmodels = ["smol"]\n' for u in (upstream, second_upstream))
    conversations = [{"prompt_cache_key": f"conv-{i}"} for i in range(6)] + [{"user": f"user-{i}"} for i in range(6)]
    placed: list[set[str]] = [set() for _ in conversations]
    with running_proxy(config) as one, running_proxy(config) as two:
        for turn in range(3):
            for i, key in enumerate(conversations):
                chat = {**CHAT, **key, "messages": [{"role": "user", "content": f"turn {turn}: {'x' * 40 * i}"}]}
                for proxy in (one, two):
                    answer = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat, headers={"x-triage-debug": "1"})
                    placed[i].add(answer.headers["x-triage-backend"])
                    assert answer.headers["x-triage-placement"].startswith("session")
    assert all(len(backends) == 1 for backends in placed)
    assert set.union(*placed) == {"alpha", "beta"}  # and the conversations are spread over both
