from __future__ import annotations

from triage_router.router.config import BackendConfig
from triage_router.router.routing.upstream_fields import scheduling_fields


def test_an_fcfs_backend_gets_nothing_added() -> None:
    assert scheduling_fields(BackendConfig(name="v", url="http://v"), 1, 40, "acme") == {}


def test_a_priority_vllm_gets_the_level_with_the_length_folded_in_and_no_tenant() -> None:
    vllm = BackendConfig(name="v", url="http://v", kind="vllm", scheduling="priority", priority_map=[0, 1, 2, 3, 4])
    assert scheduling_fields(vllm, 3, 40, "acme") == {"priority": 3_000_040}
    plain = BackendConfig(name="v", url="http://v", kind="vllm", scheduling="priority", priority_with_length=False)
    assert scheduling_fields(plain, 3, 40, "acme") == {"priority": 3}


def test_our_engine_gets_the_level_the_prediction_and_the_tenant() -> None:
    engine = BackendConfig(name="e", url="http://e", kind="engine", scheduling="priority")
    assert scheduling_fields(engine, 0, 12, "acme") == {"priority": 0, "predicted_output_tokens": 12, "tenant": "acme"}
    fcfs_engine = BackendConfig(name="e", url="http://e", kind="engine")
    assert scheduling_fields(fcfs_engine, 0, 12, "") == {"predicted_output_tokens": 12}
