"""What ``latprof list`` shows: workloads, guideline experiments and backends, as plain dicts."""

from __future__ import annotations

from typing import Any

from latprof.errors import unknown_choice

TOPICS = ("models", "blocks", "networks", "guidelines", "backends")
DEFAULT_TOPIC = "models"


def list_topic(topic: str) -> list[dict[str, Any]]:
    """Items of one topic; ``models`` is everything ``--model`` accepts by name (blocks and networks)."""
    if topic not in TOPICS:
        raise unknown_choice("list topic", topic, TOPICS)
    if topic == "backends":
        from latprof.backends import describe_backends

        return describe_backends()
    if topic == "guidelines":
        from latprof.experiments.spec import list_specs

        return [s.summary() for s in list_specs()]
    from latprof.workloads import list_workloads

    kind = {"models": None, "blocks": "block", "networks": "network"}[topic]
    return [s.as_dict() for s in list_workloads(kind)]
