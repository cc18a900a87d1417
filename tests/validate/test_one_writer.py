"""One validation writes a results folder at a time: a second run (fresh or --resume) on a
folder in use is refused at once, naming the holder's PID; the --resume advice comes only
once no run holds the folder (a killed run leaves no stale lock)."""

from __future__ import annotations

import pytest

from .conftest import nasalloc, start_nasalloc
from .test_faults import _wait_for

pytestmark = pytest.mark.slow


def test_second_validate_on_a_folder_in_use_is_refused_with_the_holders_pid(closed_loop_plan, tmp_path):
    out = tmp_path / "validate"
    args = ["validate", "--plan", closed_loop_plan, "--out", out, "--device", "cpu",
            "--algorithms", "hyperband", "--which", "2"]
    first = start_nasalloc(*args)
    try:
        _wait_for(lambda e: e["kind"] == "start", out / "hyperband_g2" / "events.jsonl", first)
        for extra in ([], ["--resume"]):  # following the old advice must not run the split twice
            second = nasalloc(*args, *extra, check=False, timeout=60)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(lines) == 1, second.stderr
            assert str(out) in lines[0] and f"PID {first.pid}" in lines[0]
            assert "--resume" not in lines[0]
            assert first.poll() is None
    finally:
        first.kill()
        first.communicate(timeout=60)
    # the holder is gone (SIGKILL): the folder is free and the advice is to resume it
    again = nasalloc(*args, check=False, timeout=60)
    assert again.returncode == 2 and "pass --resume" in again.stderr and "PID" not in again.stderr
