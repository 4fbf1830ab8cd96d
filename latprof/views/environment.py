"""``latprof env``: the fingerprint as a table (or JSON), then its noise warnings."""

from __future__ import annotations

from typing import Any


def show_environment(env: dict[str, Any], as_json: bool = False) -> int:
    from latprof.console import print_json, stdout, table, warn

    if as_json:
        print_json(env)
    else:
        rows: list[tuple[str, Any]] = [("hardware_id", env["hardware_id"])]
        for section in ("hardware", "software", "threads", "state"):
            rows += [(f"{section}.{k}", v if not isinstance(v, (dict, list)) else str(v))
                     for k, v in env[section].items()]
        stdout.print(table("Environment", ["field", "value"], rows))
    for w in env["warnings"]:
        warn(w)
    return 0
