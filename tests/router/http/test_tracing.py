"""Tracing, against real sockets, with the spans kept in memory: the request's span and its
steps, W3C trace context in from the client and out to the backend, and nothing at all while off."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream
from triage_router.router.cli.main import main
from triage_router.router.http import request_trace, tracing
from triage_router.router.http.server import StartupError

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"
OTEL_VARIABLES = ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER")


@pytest.fixture(autouse=True)
def tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with tracing off and no OTEL_* variable, and leaves it off."""
    monkeypatch.setattr(tracing, "start_request", None)
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    provider.shutdown()


def _config(*upstreams: FakeUpstream) -> str:
    return "".join(f'[[backends]]\nname = "{u.name}"\nurl = "{u.url}"\nmodels = ["smol"]\n' for u in upstreams)


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in finished}
    assert len(named) == len(finished), [span.name for span in finished]
    return named


def _hex(value: int, digits: int) -> str:
    return f"{value:0{digits}x}"


def test_a_request_span_with_a_child_per_step(upstream: FakeUpstream, spans: InMemorySpanExporter) -> None:
    with running_proxy(_config(upstream)) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "3"})
    assert response.status_code == 200
    named = _by_name(spans.get_finished_spans())
    assert set(named) == {"POST /v1/chat/completions", "triage.priority", "triage.prediction", "triage.queue",
                          "triage.placement", "chat smol"}
    server = named["POST /v1/chat/completions"]
    assert server.kind == SpanKind.SERVER and server.parent is None
    for name, span in named.items():
        assert span.context.trace_id == server.context.trace_id
        if span is not server:
            assert span.parent is not None and span.parent.span_id == server.context.span_id, name
            assert server.start_time <= span.start_time <= span.end_time <= server.end_time, name
    assert {key: server.attributes[key] for key in (
        "http.request.method", "http.route", "http.response.status_code", "gen_ai.request.model",
        "gen_ai.operation.name", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "triage.priority",
        "triage.priority.source", "triage.backend", "triage.request_id", "triage.client_disconnected")} == {
        "http.request.method": "POST", "http.route": "/v1/chat/completions", "http.response.status_code": 200,
        "gen_ai.request.model": "smol", "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3, "triage.priority": 3, "triage.priority.source": "header",
        "triage.backend": "alpha", "triage.request_id": response.headers["x-request-id"],
        "triage.client_disconnected": False}
    assert server.attributes["triage.predicted_tokens"] == int(response.headers["x-triage-predicted-tokens"])
    assert 0 <= server.attributes["triage.queue.wait_s"] <= server.attributes["triage.ttft_s"]
    assert named["triage.priority"].attributes == {"triage.priority": 3, "triage.priority.source": "header"}
    assert named["triage.prediction"].attributes["triage.predicted_tokens"] == server.attributes["triage.predicted_tokens"]
    placement = named["triage.placement"].attributes
    assert placement["triage.backend"] == "alpha" and placement["triage.placement"].startswith("cache-affinity: ")
    assert named["triage.queue"].end_time == named["triage.placement"].start_time
    client = named["chat smol"]
    assert client.kind == SpanKind.CLIENT
    assert {key: client.attributes[key] for key in ("http.request.method", "server.port", "http.response.status_code",
                                                    "gen_ai.request.model", "gen_ai.provider.name")} == {
        "http.request.method": "POST", "server.port": upstream.port, "http.response.status_code": 200,
        "gen_ai.request.model": "smol", "gen_ai.provider.name": "openai"}


def test_the_clients_traceparent_is_the_parent_and_the_backend_gets_ours(
    upstream: FakeUpstream, spans: InMemorySpanExporter
) -> None:
    incoming = f"00-{TRACE_ID}-{CLIENT_PARENT}-01"
    with running_proxy(_config(upstream)) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True},
                              headers={"traceparent": incoming, "tracestate": "vendor=abc"})
    assert response.status_code == 200
    named = _by_name(spans.get_finished_spans())
    server, client = named["POST /v1/chat/completions"], named["chat smol"]
    assert _hex(server.context.trace_id, 32) == TRACE_ID
    assert server.parent is not None and server.parent.is_remote and _hex(server.parent.span_id, 16) == CLIENT_PARENT
    sent = upstream.requests[0].headers
    assert sent["traceparent"] == f"00-{TRACE_ID}-{_hex(client.context.span_id, 16)}-01"
    assert sent["tracestate"] == "vendor=abc"
    assert server.attributes["gen_ai.request.stream"] is True and server.attributes["gen_ai.usage.output_tokens"] == 3


def test_each_attempt_is_its_own_client_span(upstream: FakeUpstream, second_upstream: FakeUpstream,
                                             spans: InMemorySpanExporter) -> None:
    upstream.mode = "status"  # 503: a request tried there moves to the other backend
    config = _config(upstream, second_upstream) + '[routing]\npolicy = "round-robin"\n'
    with running_proxy(config) as proxy:
        assert [httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT).status_code for _ in range(2)] == [200, 200]
    calls: dict[int, list[ReadableSpan]] = {}
    for span in sorted(spans.get_finished_spans(), key=lambda span: span.start_time):
        if span.kind == SpanKind.CLIENT:
            calls.setdefault(span.context.trace_id, []).append(span)
    assert len(calls) == 2 and upstream.requests, "no request tried the failing backend"
    retried = [attempts for attempts in calls.values() if len(attempts) == 2]
    assert len(retried) == len(upstream.requests)
    for failed, second in retried:
        assert failed.attributes["triage.backend"] == "alpha" and "http.request.resend_count" not in failed.attributes
        assert failed.attributes["http.response.status_code"] == 503 and failed.status.status_code == StatusCode.ERROR
        assert second.attributes["triage.backend"] == "beta" and second.attributes["http.request.resend_count"] == 1
        assert second.attributes["http.response.status_code"] == 200
    sent = {request.headers["traceparent"].split("-")[2] for request in upstream.requests}
    assert sent == {_hex(failed.context.span_id, 16) for failed, _ in retried}


def test_a_backend_urls_credentials_stay_out_of_the_span(upstream: FakeUpstream, spans: InMemorySpanExporter) -> None:
    config = f'[[backends]]\nname = "alpha"\nurl = "http://user:s3cret@127.0.0.1:{upstream.port}"\nmodels = ["smol"]\n'
    with running_proxy(config) as proxy:
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT).status_code == 200
    (client,) = [span for span in spans.get_finished_spans() if span.kind == SpanKind.CLIENT]
    assert client.attributes["url.full"] == f"http://REDACTED:REDACTED@127.0.0.1:{upstream.port}/v1/chat/completions"
    assert not any("s3cret" in str(value) for span in spans.get_finished_spans() for value in span.attributes.values())


def test_a_refused_request_is_a_span_with_its_status(upstream: FakeUpstream, spans: InMemorySpanExporter) -> None:
    with running_proxy(_config(upstream)) as proxy:
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "model": "nope"}).status_code == 404
    (server,) = [span for span in spans.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert server.attributes["http.response.status_code"] == 404
    assert server.attributes["error.type"] == "model_not_found"
    assert server.status.status_code == StatusCode.UNSET  # the client's mistake, not the server's


def test_an_unsampled_trace_records_nothing_but_still_propagates(upstream: FakeUpstream) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    with running_proxy(_config(upstream)) as proxy:
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT).status_code == 200
    assert exporter.get_finished_spans() == ()
    flags = int(upstream.requests[0].headers["traceparent"].split("-")[3], 16)
    assert not flags & 1  # not sampled: the backend need not record it either


def test_off_no_span_is_made_and_the_clients_traceparent_passes_through(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a span was made with tracing off")

    monkeypatch.setattr(request_trace.RequestTrace, "__init__", forbidden)
    assert tracing.configure_from_env() is False
    incoming = f"00-{TRACE_ID}-{CLIENT_PARENT}-01"
    with running_proxy(_config(upstream)) as proxy:
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                          headers={"traceparent": incoming}).status_code == 200
    assert tracing.start_request is None
    assert upstream.requests[0].headers["traceparent"] == incoming


def test_off_triage_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    # litestar looks for its own OpenTelemetry plugin when an app is made, and imports the API
    # package's name if it is installed; the tracing API, the SDK and our spans stay unloaded.
    code = ("import sys\n"
            "from triage_router.router.http import tracing\n"
            "from triage_router.router.http.app import create_app\n"
            "from triage_router.router.config_loader import parse_config\n"
            "assert tracing.configure_from_env() is False\n"
            "create_app(parse_config('[[backends]]\\nname = \"a\"\\nurl = \"http://127.0.0.1:9\"\\n'))\n"
            "print(sorted(name for name in sys.modules if name.startswith(('opentelemetry.trace', \n"
            "      'opentelemetry.sdk', 'opentelemetry.propagate', 'triage_router.router.http.request_trace'))))\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("variables", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_SERVICE_NAME": "router-a", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ],
)
def test_the_otel_variables_turn_tracing_on(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str],
                                            on: bool) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert tracing.configure_from_env() is on
    assert (tracing.start_request is not None) is on


def test_the_service_is_named_triage_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert tracing.configure_from_env()
    assert tracing.start_request.args[0].resource.attributes["service.name"] == "triage"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "router-a")
    assert tracing.configure_from_env()
    assert tracing.start_request.args[0].resource.attributes["service.name"] == "router-a"


def test_an_unsupported_exporter_or_protocol_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(StartupError, match="OTEL_TRACES_EXPORTER: 'zipkin' is not supported"):
        tracing.configure_from_env()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(StartupError, match="'grpc' is not supported"):
        tracing.configure_from_env()


def test_configured_without_the_packages_serve_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    config = tmp_path / "config.toml"
    config.write_text('[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9"\n')
    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("triage: error: tracing is configured (OTEL_EXPORTER_OTLP_ENDPOINT is set) but OpenTelemetry "
                     "is not installed (missing: opentelemetry.sdk.trace): pip install 'triage-router[otel]'")
