import json

import pandas as pd
import pytest

from latprof.errors import LatprofError
from latprof.results import (
    CSV_COLUMNS,
    SCHEMA_VERSION,
    ResultStore,
    base_row,
    read_results,
    row_key,
    write_csv,
)


def _row(workload="w", backend="torch-cpu", median=1.0, **kw):
    return base_row(workload=workload, backend=backend, threads=1, batch=1, input_shape="1x3x8x8",
                    latency_median_ms=median, status="ok", error="", samples_ms=[median] * 3, **kw)


def test_append_and_read_round_trip(tmp_path):
    store = ResultStore(tmp_path / "out" / "results.jsonl")
    store.append({"record": "environment", "hardware_id": "abc", "hardware": {}})
    store.append(_row("a"))
    store.append_many([_row("b"), _row("c")])
    res = read_results(tmp_path / "out")  # a folder resolves to its results.jsonl
    assert [r["workload"] for r in res.results] == ["a", "b", "c"]
    assert set(res.environments) == {"abc"}
    for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines():
        assert json.loads(line)["schema_version"] == SCHEMA_VERSION


def test_torn_last_line_is_skipped_with_warning(tmp_path):
    p = tmp_path / "results.jsonl"
    store = ResultStore(p)
    store.append(_row("a"))
    with p.open("a") as f:
        f.write('{"record": "result", "schema_ver')  # killed mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        res = read_results(p)
    assert [r["workload"] for r in res.results] == ["a"]
    assert res.skipped_torn_line


def test_store_repairs_torn_tail_before_appending(tmp_path, capsys):
    p = tmp_path / "results.jsonl"
    ResultStore(p).append(_row("a"))
    with p.open("a") as f:
        f.write('{"torn": ')
    ResultStore(p).append(_row("b"))
    assert "torn last line" in capsys.readouterr().err
    lines = p.read_text().splitlines()
    assert [json.loads(x)["workload"] for x in lines] == ["a", "b"]


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps(_row("a") | {"schema_version": SCHEMA_VERSION}) + "\nnot json\n"
                 + json.dumps(_row("b") | {"schema_version": SCHEMA_VERSION}) + "\n")
    with pytest.raises(LatprofError, match=":2: not valid JSON"):
        read_results(p)


def test_other_schema_version_is_refused(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps({**_row("a"), "schema_version": 999}) + "\n")
    with pytest.raises(LatprofError, match="schema_version 999"):
        read_results(p)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(LatprofError, match="not found"):
        read_results(tmp_path / "nope.jsonl")


def test_resume_keys_and_last_row_wins(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(_row("a", median=1.0))
    store.append(_row("a", median=2.0))  # a re-measured unit supersedes the earlier row
    store.append(_row("a", backend="ort-cpu"))
    assert store.keys() == {row_key(_row("a")), row_key(_row("a", backend="ort-cpu"))}
    res = read_results(store.path)
    assert len(res.results) == 2
    assert res.superseded == 1
    assert [r["latency_median_ms"] for r in res.results if r["backend"] == "torch-cpu"] == [2.0]


def test_csv_has_the_standard_columns_and_no_raw_samples(tmp_path):
    p = write_csv([_row("a", settings={"threads": 1})], tmp_path / "results.csv")
    df = pd.read_csv(p)
    assert list(df.columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS
    assert "samples_ms" not in df.columns
    assert df.loc[0, "workload"] == "a"


def test_unwritable_location_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LatprofError, match="cannot write"):
        ResultStore(blocker / "sub" / "results.jsonl")
