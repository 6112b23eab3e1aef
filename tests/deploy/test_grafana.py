"""Every metric the Grafana dashboard queries is one the router exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from triage_router.router.metrics import RouterMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "triage.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exported() -> set[str]:
    names = set()
    for family in RouterMetrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def test_every_queried_metric_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\btriage_[a-z0-9_]+", target["expr"])}
    exported = _exported()
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"
    # The panels are all there: per priority, per backend, tagging and chargeback.
    for needed in ("triage_time_to_first_token_seconds_bucket", "triage_request_queue_time_seconds_bucket",
                   "triage_queue_rejections_total", "triage_placements_total", "triage_backend_prefix_cache_hits",
                   "triage_backend_kv_cache_usage", "triage_priority_decisions_total", "triage_tokens_total"):
        assert needed in queried, needed


def test_panels_have_unique_ids_and_a_data_source_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
