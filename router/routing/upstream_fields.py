"""The scheduling fields Triage adds to a request's body for the backend it goes to.

- `priority`, only where the backend accepts it (`scheduling = "priority"`: a vLLM started with
  `--scheduling-policy priority` answers a non-zero `priority` with 400 otherwise). For vLLM and
  other OpenAI-style backends it folds the predicted output length in below the level
  (`triage_router.policies.backend_priority`), unless `priority_with_length = false`; our engine
  gets the level's value alone, since it reads the prediction itself.
- `predicted_output_tokens`, for our engine on every request: without it the engine can only
  assume `max_tokens`, and its shortest-remaining-work ordering would be blind.
- `tenant`, for our engine, when the request has one: its `--ordering vtc` charges it.
"""

from __future__ import annotations

from typing import Any

from triage_router.policies.backend_priority import composite_priority
from triage_router.router.config import BackendConfig


def scheduling_fields(backend: BackendConfig, level: int, predicted_output_tokens: int, tenant: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if backend.scheduling == "priority":
        value = backend.priority_map[level]
        if backend.kind != "engine" and backend.priority_with_length:
            value = composite_priority(value, predicted_output_tokens)
        fields["priority"] = value
    if backend.kind == "engine":
        fields["predicted_output_tokens"] = predicted_output_tokens
        if tenant:
            fields["tenant"] = tenant
    return fields
