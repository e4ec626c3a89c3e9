"""The Grafana dashboard and docs/OPERATIONS.md name the metrics the code records, all of them
and only those."""

from __future__ import annotations

import json
import re

from conftest import CHART, REPO, metric_names

# The request metrics both servers record come from their shared serving crate.
METRICS = (
    metric_names("tier-router")
    | metric_names("shard-writer")
    | metric_names("lib/hunt-serve", "calls.rs")
)
DASHBOARD = json.loads((CHART / "dashboards" / "hunt-pipeline.json").read_text())


def named_metrics(text: str) -> set[str]:
    """Metric names in `text`; a histogram's `_bucket`, `_sum` and `_count` series count as their
    metric."""
    names = set()
    for name in re.findall(r"\bhunt_(?:router|writer|grpc|http)_[a-z_]+", text):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in METRICS else name)
    return names


def dashboard_exprs() -> list[str]:
    exprs = []
    for panel in DASHBOARD["panels"]:
        exprs += [target["expr"] for target in panel.get("targets", [])]
    return exprs


def test_the_code_declares_metrics():
    assert len(metric_names("tier-router")) > 20
    assert len(metric_names("shard-writer")) > 10
    assert len(metric_names("lib/hunt-serve", "calls.rs")) == 4


def test_dashboard_uses_every_metric_and_no_other():
    used = named_metrics("\n".join(dashboard_exprs()))
    assert used - METRICS == set(), "the dashboard queries metrics the code does not record"
    assert METRICS - used == set(), "metrics missing from the dashboard"


def test_dashboard_panels_are_laid_out():
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24


def test_operations_guide_lists_every_metric():
    guide = (REPO / "docs" / "OPERATIONS.md").read_text()
    named = named_metrics(guide)
    assert METRICS - named == set(), "metrics missing from docs/OPERATIONS.md"
    assert named - METRICS == set(), "docs/OPERATIONS.md names metrics the code does not record"
