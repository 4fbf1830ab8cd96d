"""``latprof list TOPIC``: one table of the catalogue's items (nested fields only in ``--json``)."""

from __future__ import annotations

from typing import Any


def show_list(topic: str, items: list[dict[str, Any]], as_json: bool = False) -> int:
    from latprof.catalog import table_columns
    from latprof.console import print_json, stdout, table

    if as_json:
        print_json(items)
        return 0
    if not items:
        stdout.print(f"no {topic}")
        return 0
    cols = table_columns(topic, items)
    stdout.print(table(topic.capitalize(), cols, [[it.get(c) for c in cols] for it in items]))
    return 0
