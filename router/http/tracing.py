"""Whether requests are traced, and OpenTelemetry set up from the standard OTEL_* variables.

Tracing is on only when an exporter is configured: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, or `OTEL_TRACES_EXPORTER` names one (`otlp`,
`console`). `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off whatever else is
set. Off, OpenTelemetry is never imported and `start_request` stays None: the proxy reads it once
per request and makes no span. On, the SDK reads the other variables itself: `OTEL_SERVICE_NAME`
(Triage's default: "triage"), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG`, `OTEL_PROPAGATORS`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`.

The packages are the `otel` extra; tracing configured without them stops `triage serve` with a
one-line error that says what to install.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from triage_router.router.http.server import StartupError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from triage_router.router.http.request_trace import RequestTrace

# Starts the spans of one request while tracing is on (request_trace.py, RequestTrace); None,
# the default, while it is off.
start_request: Callable[..., RequestTrace] | None = None

SERVICE_NAME = "triage"
_INSTALL = "pip install 'triage-router[otel]'"


def _configured_by() -> str | None:
    """The variable that turns tracing on, or None while tracing stays off."""
    environ = os.environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if exporters := environ.get("OTEL_TRACES_EXPORTER", "").strip().lower():
        return None if exporters == "none" else "OTEL_TRACES_EXPORTER"
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if environ.get(name, "").strip():
            return name
    return None


def configure_from_env() -> bool:
    """Turn tracing on when the environment configures an exporter; whether it did. Raises
    StartupError when it is configured but cannot work."""
    if (variable := _configured_by()) is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise StartupError(f"tracing is configured ({variable} is set) but OpenTelemetry is not installed "
                           f"(missing: {error.name}): {_INSTALL}") from None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    # The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on by default).
    provider = TracerProvider(resource=resource)
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    for name in names.split(","):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name.strip())))
    install(provider)
    return True


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise StartupError(f"OTEL_TRACES_EXPORTER: {name!r} is not supported; use otlp or console")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf")
    if protocol != "http/protobuf":
        raise StartupError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; Triage exports "
                           "OTLP over http/protobuf (a collector's port 4318)")
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as error:
        raise StartupError(f"tracing is configured but the OTLP exporter is not installed (missing: {error.name}): "
                           f"{_INSTALL}") from None
    return OTLPSpanExporter()


def install(provider: TracerProvider) -> None:
    """Trace every request from now on, with `provider`'s tracer (tests pass one that keeps the
    spans in memory)."""
    from triage_router.router.http.request_trace import RequestTrace

    global start_request
    start_request = functools.partial(RequestTrace, provider.get_tracer("triage_router.router"))
