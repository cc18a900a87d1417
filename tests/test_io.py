"""Durable output: atomic replacement and append-only logs that survive a killed writer."""

import os
import stat

import pytest

from nasalloc.errors import UserError
from nasalloc.io import JsonlAppender, atomic_write_json, read_json, read_jsonl


def test_append_after_a_torn_line_keeps_the_log_readable(tmp_path):
    path = tmp_path / "events.jsonl"
    with JsonlAppender(path, fsync=False) as log:
        log.write({"n": 1})
    with open(path, "a") as handle:  # a writer killed mid-record
        handle.write('{"n": 2, "half')
    assert [r["n"] for r in read_jsonl(path)] == [1]  # the torn line is skipped
    with JsonlAppender(path, fsync=False) as log:  # a resumed run appends
        log.write({"n": 3})
    assert [r["n"] for r in read_jsonl(path)] == [1, 3]


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"n": 1}\nnot json\n{"n": 3}\n')
    with pytest.raises(UserError, match="line 2"):
        list(read_jsonl(path))


def test_atomic_write_replaces_whole_and_keeps_the_usual_mode(tmp_path):
    path = tmp_path / "plan.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert read_json(path) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_missing_and_malformed_json_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_json(tmp_path / "nope.json", "plan")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "bad.json", "plan")
