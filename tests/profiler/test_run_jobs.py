"""How the profiler judges a finished measuring job: success, skip, retry or failure."""

from pathlib import Path

import pytest

from nasalloc.profiler.launch import Capacity, DDPJob, Launcher, RunningJob
from nasalloc.profiler.request import ProfileRequest
from nasalloc.profiler.run import ProfileFailed, _run_jobs
from nasalloc.profiler.worker import TEARDOWN_MARKER


class FinishedJob(RunningJob):
    def __init__(self, code, tail):
        self.code, self.tail = code, tail

    def poll(self):
        return self.code

    def wait(self, timeout=None):
        return self.code

    def terminate(self, reason="terminated"):
        pass

    @property
    def returncode(self):
        return self.code

    @property
    def failure(self):
        return None if self.code == 0 else f"job: rank 1 exited with status {self.code}"

    def stderr_tail(self, lines=20):
        return self.tail


class ScriptedLauncher(Launcher):
    """Each start() plays the next scripted outcome: (exit status, log tail, writes its result)."""

    name = "scripted"

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.starts = 0

    def capacity(self, device):
        return Capacity(device=device, gpus=0, nodes=1, gpus_per_node=0, cpus=8, where="here")

    def start(self, job):
        code, tail, writes = self.outcomes[self.starts]
        self.starts += 1
        result = Path(job.args[job.args.index("--result") + 1])
        if writes:
            result.write_text("{}")
        else:
            result.unlink(missing_ok=True)
        return FinishedJob(code, tail)


def run(tmp_path, outcomes):
    launcher = ScriptedLauncher(outcomes)
    request = ProfileRequest(gpus=[2], workload="digits", workload_options={}, config={}, device="cpu",
                             launcher=launcher, out=tmp_path / "p.json")
    job = DDPJob(module="m", args=["--result", str(tmp_path / "r.json")], ranks=2)
    return _run_jobs(request, [job], "g=2"), launcher.starts


ABORT = f"{TEARDOWN_MARKER} rank 1\nterminate called without an active exception"


def test_success_needs_no_second_start(tmp_path):
    assert run(tmp_path, [(0, "", True)]) == (None, 1)


def test_an_abort_after_the_result_was_written_counts_as_measured(tmp_path):
    assert run(tmp_path, [(-6, ABORT, True)]) == (None, 1)


def test_an_abort_in_teardown_before_the_result_is_retried_once(tmp_path):
    assert run(tmp_path, [(-6, ABORT, False), (0, "", True)]) == (None, 2)
    with pytest.raises(ProfileFailed, match="rank 1 exited with status -6"):
        run(tmp_path, [(-6, ABORT, False), (-6, ABORT, False)])


def test_a_taken_port_is_retried_once(tmp_path):
    taken = "RuntimeError: The server socket has failed to listen on any local network address. " \
            "port: 29500, useIpv6: 0, code: -98, name: EADDRINUSE, message: address already in use"
    assert run(tmp_path, [(1, taken, False), (0, "", True)]) == (None, 2)


def test_out_of_memory_is_a_skip_and_other_errors_fail(tmp_path):
    skip, _ = run(tmp_path, [(1, "torch.OutOfMemoryError: CUDA out of memory.", False)])
    assert skip.startswith("out of memory")
    with pytest.raises(ProfileFailed, match="ValueError: bad"):
        run(tmp_path, [(1, "Traceback\nValueError: bad", False)])
