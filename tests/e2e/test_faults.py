"""Every error path of the proxy, against real sockets: statuses, retries, cancellation, draining."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import openai
import pytest

from tests.fakes.proxy import running_proxy
from triage_router.router.config_loader import parse_config
from tests.fakes.upstream import FakeUpstream

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}


def _backend(u: FakeUpstream, models: str = '["smol"]') -> str:
    return f'[[backends]]\nname = "{u.name}"\nurl = "{u.url}"\nmodels = {models}\n'


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"model": "smol"}', "messages"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "smol", "messages": []}', "messages"),
        (b'{"model": "smol", "messages": [{"content": "x"}]}', "messages[0]"),
    ],
)
def test_malformed_bodies_are_400_and_never_reach_the_upstream(upstream: FakeUpstream, body: bytes, param: str | None) -> None:
    with running_proxy(_backend(upstream)) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", content=body)
    assert response.status_code == 400
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.requests == []


def test_completions_require_a_prompt(upstream: FakeUpstream) -> None:
    with running_proxy(_backend(upstream)) as proxy:
        response = httpx.post(f"{proxy.url}/v1/completions", json={"model": "smol"})
    assert response.status_code == 400 and _error(response)["param"] == "prompt"


def test_body_over_the_limit_is_413(upstream: FakeUpstream) -> None:
    config = _backend(upstream) + "[server]\nmax_body_bytes = 1000\n"
    with running_proxy(config) as proxy:
        big = {"model": "smol", "messages": [{"role": "user", "content": "x" * 2000}]}
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=big)
        small = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 413 and _error(response)["code"] == "request_too_large"
    assert small.status_code == 200


def test_unknown_model_is_404(upstream: FakeUpstream) -> None:
    with running_proxy(_backend(upstream)) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("value", ["urgent", "7", "-1", "", "1.5"])
def test_invalid_priority_header_is_400_naming_it(upstream: FakeUpstream, value: str) -> None:
    with running_proxy(_backend(upstream)) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": value})
    assert response.status_code == 400
    error = _error(response)
    assert error["param"] == "x-priority" and "x-priority" in error["message"]


def test_priority_header_name_is_configurable(upstream: FakeUpstream) -> None:
    config = _backend(upstream) + '[priority]\nheader = "x-urgency"\ndefault = 3\nanonymous_max_priority = 0\n'
    with running_proxy(config) as proxy:
        asked = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-urgency": "0"})
        default = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "0"})
    assert asked.headers["x-triage-priority"] == "0"
    assert default.headers["x-triage-priority"] == "3" and default.headers["x-triage-priority-source"] == "default"


def test_a_caller_without_a_key_cannot_claim_more_than_the_default_level(upstream: FakeUpstream) -> None:
    with running_proxy(_backend(upstream)) as proxy:
        claimed = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "0"})
        modest = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "4"})
    assert claimed.headers["x-triage-priority"] == "2" and claimed.headers["x-triage-priority-clamped-from"] == "0"
    assert modest.headers["x-triage-priority"] == "4"


def test_api_keys_authenticate_and_clamp_priority(upstream: FakeUpstream) -> None:
    config = _backend(upstream) + '[[api_keys]]\nkey = "sk-team-a"\nmax_priority = 1\n'
    with running_proxy(config) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-team-a", max_retries=0)
        clamped = client.chat.completions.with_raw_response.create(
            model="smol", messages=[{"role": "user", "content": "x"}], extra_headers={"x-priority": "0"}
        )
        allowed = client.chat.completions.with_raw_response.create(
            model="smol", messages=[{"role": "user", "content": "x"}], extra_headers={"x-priority": "3"}
        )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
                model="smol", messages=[{"role": "user", "content": "x"}]
            )
        missing = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert clamped.headers["x-triage-priority"] == "1"
    assert clamped.headers["x-triage-priority-clamped-from"] == "0"
    assert allowed.headers["x-triage-priority"] == "3" and "x-triage-priority-clamped-from" not in allowed.headers
    assert missing.status_code == 401 and _error(missing)["type"] == "authentication_error"
    # The client's key for Triage is not leaked upstream.
    assert all("sk-team-a" not in r.headers.get("authorization", "") for r in upstream.requests)


def test_refused_upstream_is_502_then_marked_down_is_503(upstream: FakeUpstream) -> None:
    upstream.mode = "refuse"
    config = _backend(upstream) + "[upstream]\nfailure_threshold = 1\nmax_attempts = 1\nprobe_initial_interval_s = 30\n"
    with running_proxy(config) as proxy:
        first = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
        second = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
        health = httpx.get(f"{proxy.url}/health").json()
    assert first.status_code == 502 and _error(first)["code"] == "upstream_unreachable"
    assert second.status_code == 503 and _error(second)["code"] == "no_healthy_backend"
    assert second.headers["retry-after"] == "1"
    assert health["backends"] == {"alpha": "down"}


def test_silent_upstream_is_504(upstream: FakeUpstream) -> None:
    upstream.mode = "hang"
    config = _backend(upstream) + "[upstream]\nread_timeout_s = 0.3\nmax_attempts = 1\n"
    with running_proxy(config) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 504 and _error(response)["code"] == "upstream_timeout"


def test_upstream_503_is_relayed_when_no_other_backend_can_answer(upstream: FakeUpstream) -> None:
    upstream.mode, upstream.status = "status", 503
    with running_proxy(_backend(upstream) + "[upstream]\nfailure_threshold = 10\n") as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 503 and "alpha says 503" in _error(response)["message"]


def test_upstream_429_is_relayed_and_does_not_mark_the_backend_down(upstream: FakeUpstream) -> None:
    upstream.mode, upstream.status = "status", 429
    config = _backend(upstream) + "[upstream]\nfailure_threshold = 1\n"
    with running_proxy(config) as proxy:
        responses = [httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT) for _ in range(3)]
        health = httpx.get(f"{proxy.url}/health").json()
    assert [r.status_code for r in responses] == [429, 429, 429]
    assert health["backends"] == {"alpha": "up"}
    assert len([r for r in upstream.requests if r.method == "POST"]) == 3


@pytest.mark.parametrize("failure", ["refuse", "status"])
def test_failed_attempts_move_to_another_backend(upstream: FakeUpstream, second_upstream: FakeUpstream, failure: str) -> None:
    upstream.mode, upstream.status = failure, 502
    config = _backend(upstream) + _backend(second_upstream) + "[upstream]\nfailure_threshold = 100\n"
    with running_proxy(config) as proxy:
        # Ties between the two backends are broken by a hash of the request id: among these
        # fixed ids, some try alpha first, fail there, and move to beta.
        responses = [
            httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-request-id": f"retry-{i}"})
            for i in range(8)
        ]
        metrics = httpx.get(f"{proxy.url}/metrics").text
    assert all(r.status_code == 200 and r.headers["x-triage-backend"] == "beta" for r in responses)
    tried_alpha = [r for r in upstream.requests if r.method == "POST"]
    assert tried_alpha, "no request tried alpha first"
    assert f'triage_upstream_retries_total{{backend="beta"}} {float(len(tried_alpha))}' in metrics


def test_attempts_are_capped(upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    upstream.mode = second_upstream.mode = "refuse"
    config = _backend(upstream) + _backend(second_upstream) + "[upstream]\nmax_attempts = 1\nfailure_threshold = 100\n"
    with running_proxy(config) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert len(upstream.requests) + len(second_upstream.requests) == 1


def test_no_retry_once_the_stream_has_started(upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    upstream.mode = second_upstream.mode = "stream_hold"
    config = _backend(upstream) + _backend(second_upstream)
    with running_proxy(config) as proxy:
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            chosen = upstream if response.headers["x-triage-backend"] == "alpha" else second_upstream
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            # The upstream dies mid-stream: the client is told in-stream, nothing is retried.
            chosen.break_connections()
            rest = list(lines)
    other = second_upstream if chosen is upstream else upstream
    assert other.requests == []
    assert any('"upstream_unreachable"' in line for line in rest)


def test_client_disconnect_cancels_the_upstream_request(upstream: FakeUpstream) -> None:
    upstream.mode = "hang"
    with running_proxy(_backend(upstream)) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        body = b'{"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}'
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode() + body
            )
            assert upstream.received.wait(10)
        assert upstream.disconnected.wait(10), "the upstream never saw its connection close"
        metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'reason="client_disconnect"' in metrics


def test_client_disconnect_mid_stream_cancels_the_upstream(upstream: FakeUpstream) -> None:
    upstream.mode = "stream_hold"
    with running_proxy(_backend(upstream)) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="k", max_retries=0)
        stream = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "x"}], stream=True)
        assert next(iter(stream)).choices[0].delta.content == "tok0 "
        stream.close()
        assert upstream.disconnected.wait(10), "the upstream never saw its connection close"


def test_shutdown_drains_a_request_in_flight(upstream: FakeUpstream) -> None:
    upstream.mode = "stream_hold"
    with running_proxy(_backend(upstream)) as proxy:
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            proxy.shut_down()
            upstream.release.set()
            rest = [line for line in lines if line]
        proxy.thread.join(15)
        assert not proxy.thread.is_alive()
    assert rest[-1] == "data: [DONE]" and len(rest) == 3


def test_metrics_are_labelled_by_priority_and_backend(upstream: FakeUpstream) -> None:
    with running_proxy(_backend(upstream)) as proxy:
        httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "3"})
        httpx.post(f"{proxy.url}/v1/chat/completions", json={"model": "smol"})
        text = httpx.get(f"{proxy.url}/metrics").text
    assert 'triage_requests_total{backend="alpha",endpoint="chat",model="smol",priority="3",status="200"} 1.0' in text
    assert 'triage_time_to_first_byte_seconds_count{backend="alpha",priority="3"} 1.0' in text
    assert 'triage_request_duration_seconds_count{backend="alpha",priority="3"} 1.0' in text
    assert 'triage_requests_in_flight{backend="alpha",priority="3"} 0.0' in text
    assert 'triage_requests_total{backend="none",endpoint="chat",model="none",priority="none",status="400"} 1.0' in text
    assert 'triage_backend_up{backend="alpha"} 1.0' in text


def test_unknown_paths_and_methods_answer_in_openai_shape(upstream: FakeUpstream) -> None:
    with running_proxy(_backend(upstream)) as proxy:
        unknown = httpx.get(f"{proxy.url}/v1/nothing-here")
        wrong_method = httpx.get(f"{proxy.url}/v1/chat/completions")
        trailing_slash = httpx.post(f"{proxy.url}/v1/chat/completions/", json=CHAT)
    assert unknown.status_code == 404 and _error(unknown)["type"] == "invalid_request_error"
    assert wrong_method.status_code == 405 and _error(wrong_method)["code"] == "method_not_allowed"
    assert trailing_slash.status_code == 200
    assert upstream.requests[-1].path == "/v1/chat/completions"


def metric_count(text: str, name: str, **labels: str) -> float:
    """The value of one sample line, 0 if the series does not exist yet."""
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_time_to_first_token_waits_for_a_token_not_the_role_chunk(upstream: FakeUpstream) -> None:
    upstream.mode, upstream.role_chunk_first = "stream_hold", True
    with running_proxy(_backend(upstream)) as proxy:
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True},
                          headers={"x-priority": "3"}) as response:
            lines = response.iter_lines()
            assert '"content": ""' in next(lines)  # the role chunk reached the client...
            held = httpx.get(f"{proxy.url}/metrics").text
            upstream.release.set()
            rest = [line for line in lines if line]
        text = httpx.get(f"{proxy.url}/metrics").text
    labels = {"priority": "3", "model": "smol"}
    # ...yet no first token was counted until one came.
    assert metric_count(held, "triage_time_to_first_token_seconds_count", **labels) == 0
    assert metric_count(held, "triage_time_to_first_byte_seconds_count", backend="alpha", priority="3") == 1
    assert rest[-1] == "data: [DONE]"
    assert metric_count(text, "triage_time_to_first_token_seconds_count", **labels) == 1
    # Three tokens with usage: one time-per-output-token sample.
    assert metric_count(text, "triage_time_per_output_token_seconds_count", **labels) == 1
    assert metric_count(text, "triage_e2e_request_latency_seconds_count", **labels) == 1
    assert metric_count(text, "triage_request_queue_time_seconds_count", **labels) == 1


def test_queue_time_is_recorded_for_a_request_that_waited(upstream: FakeUpstream) -> None:
    upstream.mode = "stream_hold"
    waited: list[httpx.Response] = []
    with running_proxy(_backend(upstream) + "max_load = 1\n") as proxy:
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}) as holder:
            held = holder.iter_lines()  # kept: a dropped generator closes the stream
            assert next(held).startswith("data: ")
            # The second request waits in the queue until the first one's slot comes back.
            waiter = threading.Thread(target=lambda: waited.append(httpx.post(
                f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "3"}, timeout=30)))
            waiter.start()
            for _ in range(10_000):
                if metric_count(httpx.get(f"{proxy.url}/metrics").text, "triage_queue_length", priority="3") == 1:
                    break
            else:
                raise AssertionError("the second request never queued")
            upstream.release.set()
            waiter.join(30)
        text = httpx.get(f"{proxy.url}/metrics").text
    assert waited and waited[0].status_code == 200
    assert metric_count(text, "triage_request_queue_time_seconds_count", priority="3", model="smol") == 1
    # It waited at least as long as the polls above took: not in the lowest bucket.
    assert metric_count(text, "triage_request_queue_time_seconds_bucket", le="0.001", model="smol", priority="3") == 0


def test_a_key_allowed_20_a_minute_gets_exactly_20_of_40_quick_requests(upstream: FakeUpstream) -> None:
    config = _backend(upstream) + ('[[api_keys]]\nkey = "sk-20"\nrequests_per_minute = 20\n'
                                   '[[api_keys]]\nkey = "sk-tokens"\ntokens_per_minute = 25\n')
    with running_proxy(config) as proxy:
        burst = [httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-20"})
                 for _ in range(40)]
        # Each answer reports 10 tokens of usage: 25 a minute admits three (the third overdraws).
        spent = [httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-tokens"})
                 for _ in range(4)]
    statuses = [r.status_code for r in burst]
    assert statuses.count(200) == 20 and statuses.count(429) == 20 and statuses[:20] == [200] * 20
    refused = burst[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "20" and refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert [r.status_code for r in spent] == [200, 200, 200, 429]
    assert spent[-1].headers["x-ratelimit-limit-tokens"] == "25"


def test_a_backend_with_its_own_first_byte_timeout_is_cut_off_by_it(upstream: FakeUpstream) -> None:
    # [upstream] would wait 300 s for the hanging backend; its own first_byte_timeout_s is 0.3 s.
    upstream.mode = "hang"
    config = _backend(upstream) + "first_byte_timeout_s = 0.3\n[upstream]\nmax_attempts = 1\n"
    with running_proxy(config) as proxy:
        # The client gives up after 30 s: a 504 before that can only come from the backend's limit.
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, timeout=30)
    assert response.status_code == 504 and _error(response)["code"] == "upstream_timeout"


def test_2000_headers_and_a_slow_drip_body_are_refused_and_the_next_request_succeeds(upstream: FakeUpstream) -> None:
    config = _backend(upstream).replace("[[backends]]", "[server]\nbody_deadline_s = 0.5\n\n[[backends]]")
    with running_proxy(config) as proxy:
        many = {f"x-filler-{i}": "1" for i in range(2000)}
        crowded = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=many)
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                           b"content-length: 1000\r\n\r\n{")  # then nothing more: a slowloris body
            answer = client.recv(65536)
        normal = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert crowded.status_code == 431 and _error(crowded)["code"] == "request_header_fields_too_large"
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert normal.status_code == 200


def test_ready_only_while_every_configured_model_has_a_healthy_backend(upstream: FakeUpstream) -> None:
    config = _backend(upstream) + "[upstream]\nfailure_threshold = 1\nmax_attempts = 1\n"
    with running_proxy(config) as proxy:
        before = httpx.get(f"{proxy.url}/ready")
        upstream.mode = "refuse"
        try:
            httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)  # marks the only backend down
            after = httpx.get(f"{proxy.url}/ready")
            alive = httpx.get(f"{proxy.url}/health")
        finally:
            upstream.mode = "ok"
    assert before.status_code == 200 and before.json() == {"status": "ready"}
    assert after.status_code == 503 and "smol" in after.json()["no_healthy_backend_for"]
    assert alive.status_code == 200  # liveness: the process answers


def test_the_server_outlasts_clients_idle_connections_and_closes_its_own_when_told() -> None:
    # The client must be the one to close an idle connection: closed by the server at the moment
    # a client sends on it, the request is lost. httpx (the OpenAI SDK) keeps one 5 s, aiohttp 15 s.
    default = parse_config('[[backends]]\nname = "a"\nurl = "http://a"\n').server.keep_alive_s
    aiohttp_default_keepalive_s = 15.0  # aiohttp.TCPConnector's, behind a sentinel in its signature
    assert default > max(httpx.Limits().keepalive_expiry or 0, aiohttp_default_keepalive_s)
    config = '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9"\n[server]\nkeep_alive_s = 0.5\n'
    with running_proxy(config) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(1.0)
            assert client.recv(65536) == b""  # closed by the server after keep_alive_s


def test_not_ready_while_no_backend_has_answered_yet() -> None:
    # A backend still loading its model: nothing listens on its port yet. No request has failed
    # there, so it still counts as healthy; it has never answered, so it is not ready.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    config = f'[[backends]]\nname = "loading"\nurl = "http://127.0.0.1:{port}"\nmodels = ["smol"]\n'
    with running_proxy(config) as proxy:
        ready = httpx.get(f"{proxy.url}/ready")
        health = httpx.get(f"{proxy.url}/health")
    assert health.status_code == 200 and health.json()["backends"] == {"loading": "up"}
    assert ready.status_code == 503 and "smol" in ready.json()["no_healthy_backend_for"]


def test_backend_readings_and_tokens_per_key_are_exported(upstream: FakeUpstream) -> None:
    upstream.metrics_text = (
        'vllm:num_requests_running{model_name="smol"} 1.0\nvllm:num_requests_waiting{model_name="smol"} 0.0\n'
        'vllm:kv_cache_usage_perc{model_name="smol"} 0.25\n'
        'vllm:prefix_cache_queries_total{model_name="smol"} 1000.0\nvllm:prefix_cache_hits_total{model_name="smol"} 400.0\n')
    config = _backend(upstream) + '[[api_keys]]\nkey = "sk-team"\nname = "team-a"\n'
    try:
        with running_proxy(config) as proxy:
            for _ in range(2):
                httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-team"})
            deadline = time.monotonic() + 10
            while 'triage_backend_running{backend="alpha"} 1.0' not in (text := httpx.get(f"{proxy.url}/metrics").text):
                assert time.monotonic() < deadline, "no reading was exported"
                time.sleep(0.1)
    finally:
        upstream.metrics_text = FakeUpstream().metrics_text
    assert 'triage_tokens_total{key="team-a",kind="prompt",model="smol"} 14.0' in text
    assert 'triage_tokens_total{key="team-a",kind="completion",model="smol"} 6.0' in text
    # A reading with nothing waiting teaches no concurrency: 0 until one does.
    for line in ('triage_backend_waiting{backend="alpha"} 0.0', 'triage_backend_kv_cache_usage{backend="alpha"} 0.25',
                 'triage_backend_prefix_cache_hits{backend="alpha"} 400.0',
                 'triage_backend_learned_concurrency{backend="alpha"} 0.0'):
        assert line in text, line
