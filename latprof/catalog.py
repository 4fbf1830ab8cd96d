"""What ``latprof list`` shows: workloads, guideline experiments and backends, as plain dicts."""

from __future__ import annotations

from typing import Any

from latprof.errors import unknown_choice

TOPICS = ("models", "blocks", "networks", "guidelines", "backends")
DEFAULT_TOPIC = "models"
# Long text left out of the terminal table (``--json`` has every field).
TABLE_HIDDEN = {"guidelines": ("claim", "path", "repeat")}


def table_columns(topic: str, items: list[dict[str, Any]]) -> list[str]:
    """The columns ``latprof list`` prints as a table: the scalar fields, less the long ones of ``TABLE_HIDDEN``."""
    hidden = TABLE_HIDDEN.get(topic, ())
    return [c for c in items[0] if not isinstance(items[0][c], (dict, list)) and c not in hidden]


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
