"""Trials across two nodes of a real SLURM: the two-node cluster of ``.ci/slurm-local.sh start
--nodes 2`` (slurmd ci-n1 and ci-n2 on this machine, each on its own port and loopback
address; see docs/slurm.md). A g of 2 on nodes of 1 GPU takes both nodes, as the simulator
places it, for ``nasalloc profile`` and for ``nasalloc validate --executor slurm``:

* each rank writes where it ran (``nasalloc slurm_task: rank R/W ... on NODE ... rendezvous
  ADDR:PORT``) into its log: rank 0 on ci-n1, rank 1 on ci-n2, both meeting at ci-n1, the
  step's first host; each slurmd's own log shows the step launched there;
* squeue shows each trial step's node list, the ``--nodelist`` the placement asked for;
* the rank on ci-n2 killed mid-epoch (a node's part of the step dies) fails the trial with
  that rank and node named, and the search goes on, as on one node.
"""

import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from nasalloc.io import read_jsonl

from .conftest import small_plans
from .test_real_validate import ENDS, NASALLOC, kinds_by_trial

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
NODES = ("ci-n1", "ci-n2")
RUN_DIR = "asha_g2"  # the plan's only split: 1 trial of 2 GPUs, one on each node
PLACEMENT = re.compile(r"nasalloc slurm_task: rank (\d+)/(\d+) local (\d+) node (\d+) on (\S+) "
                       r"\(host \S+\) rendezvous (\S+):(\d+)")


@pytest.fixture(scope="module")
def plan(tmp_path_factory, slurm_multi):
    """Budget 2 on nodes of 1 GPU, split into trials of 2 GPUs: each trial spans both nodes."""
    # 9 epochs: a trial that passes its rungs trains long enough (~0.3 s) to be caught mid-epoch
    return small_plans(tmp_path_factory)(2, 1, "2", "--max-epochs", "9")


def job_id_of(salloc_stderr: str) -> str:
    found = re.search(r"Granted job allocation (\d+)", salloc_stderr)
    assert found, salloc_stderr[-2000:]
    return found.group(1)


def launched_steps(slurm, node: str, job_id: str) -> set:
    """Step ids of job ``job_id`` that ``node``'s slurmd says it launched."""
    return set(re.findall(rf"launch task StepId={job_id}\.(\d+) ", slurm.slurmd_log(node)))


def placements(log_dir: Path) -> dict:
    """rank -> (world size, local rank, node rank, node name, rendezvous host) from the rank logs."""
    seen = {}
    for log in sorted(log_dir.glob("rank*.log")):
        found = PLACEMENT.search(log.read_text(errors="replace"))
        assert found, f"{log} has no placement line: {log.read_text(errors='replace')[-1000:]}"
        rank, world, local, node, name, addr, _ = found.groups()
        seen[int(rank)] = (int(world), int(local), int(node), name, addr)
    return seen


def test_profile_measures_a_g_that_spans_two_nodes(slurm_multi, tmp_path):
    out = tmp_path / "profile.json"
    done = slurm_multi.salloc([*NASALLOC, "profile", "--launcher", "slurm", "--gpus", "2", "--gpus-per-node", "1",
                               "--device", "cpu", "--workload", "digits", "--warmup", "0", "--epochs", "2",
                               "--noise-epochs", "none", "--timeout", "120", "--out", str(out)],
                              nodes=2, gpus=1, cpus=2, timeout_s=240, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    profile = json.loads(out.read_text())
    assert profile["hardware"]["launcher"] == "slurm" and profile["hardware"]["nodes"] == 2
    (m,) = [m for m in profile["measurements"] if m["kind"] == "ddp"]
    assert m["gpus"] == 2 and m["nodes"] == 2 and m["ranks"] == 2  # 2 ranks that found each other
    assert len(m["epoch_seconds"]) == 2 and all(t > 0 for t in m["epoch_seconds"])
    job = job_id_of(done.stderr)
    on_node = {node: launched_steps(slurm_multi, node, job) for node in NODES}
    # the measuring step ran on both nodes: each slurmd launched its part of the same step
    assert on_node["ci-n1"] & on_node["ci-n2"], on_node


def test_validate_places_each_trial_on_both_nodes_and_survives_a_node_s_rank_killed(slurm_multi, plan, tmp_path):
    out = tmp_path / "validate"
    events_path = out / RUN_DIR / "events.jsonl"
    seen_steps, killed = {}, {}

    def watch_and_kill():
        """Record every trial step's node list; kill the ci-n2 rank of the first trial that has
        finished an epoch and still runs (mid-epoch: it is in its next one)."""
        def step():
            # the kill first: a trial's epochs take hundredths of a second, and squeue a tenth
            if not killed and events_path.exists():
                events = list(read_jsonl(events_path))
                trained = {e["trial_id"] for e in events if e["kind"] == "epoch"}
                ended = {e["trial_id"] for e in events if e["kind"] in ENDS}
                for tid in sorted(trained - ended):
                    pid = rank_pid(tid, "ci-n2")
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        killed.update(trial=tid, pid=pid)
                        break
            for step_id, name, nodelist in slurm_multi.steps_named("nasalloc-trial", nodes=True):
                seen_steps[name] = nodelist
            return bool(killed)
        try:
            slurm_multi.wait_until(step, 200, "a trial to kill", interval_s=0.02)
        except AssertionError:
            pass
        for _ in range(600):  # go on recording node lists until validate ends
            if not done_event.wait(0.2):
                for step_id, name, nodelist in slurm_multi.steps_named("nasalloc-trial", nodes=True):
                    seen_steps[name] = nodelist
            else:
                return

    done_event = threading.Event()
    watcher = threading.Thread(target=watch_and_kill, daemon=True)
    watcher.start()
    try:
        done = slurm_multi.salloc([*NASALLOC, "validate", "--plan", str(plan), "--which", "best", "--device", "cpu",
                                   "--executor", "slurm", "--out", str(out)],
                                  nodes=2, gpus=1, cpus=2, timeout_s=300)
    finally:
        done_event.set()
        watcher.join(10)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    events = list(read_jsonl(events_path))

    # the placement the simulator assumed: GPUs 0 and 1, i.e. node 0 and node 1 of nodes of 1 GPU
    starts = [e for e in events if e["kind"] in ("start", "resume")]
    assert starts and {tuple(e["placement"]) for e in starts} == {(0, 1)}
    assert seen_steps and set(seen_steps.values()) == {"ci-n[1-2]"}, seen_steps  # each step's --nodelist

    # every segment's ranks: rank 0 on ci-n1, rank 1 on ci-n2, both meeting at ci-n1
    segments = sorted(p for p in (out / RUN_DIR / "trials").glob("trial_*/segment_*") if p.is_dir())
    assert len(segments) == len(starts)
    for segment in segments:
        assert placements(segment) == {0: (2, 0, 0, "ci-n1", "ci-n1"), 1: (2, 0, 1, "ci-n2", "ci-n1")}, segment

    # the killed rank failed its trial, named with its node; the search went on
    assert killed, "no trial was seen running after an epoch, so no rank was killed"
    fails = [e for e in events if e["kind"] == "fail"]
    assert [e["trial_id"] for e in fails] == [killed["trial"]]
    error = fails[0]["error"]
    assert f"trial{killed['trial']}-s1: rank 1 on ci-n2 " in error, error
    assert any(e["kind"] == "epoch" and e["trial_id"] == killed["trial"] for e in events[:events.index(fails[0])])
    for tid, kinds in kinds_by_trial(events).items():
        assert kinds[0] == "start" and kinds[-1] in ENDS, (tid, kinds)
    assert len(kinds_by_trial(events)) == 4  # the other trials ran after the failure
    assert json.loads((out / RUN_DIR / "state.json").read_text())["finished"] is True
    assert json.loads((out / "report.json").read_text())["splits"][0]["failed"] == 1


def rank_pid(trial_id: int, node: str, **env):
    """The pid of trial ``trial_id``'s rank process that the slurmd of ``node`` started (all
    nodes are this machine: the process's environment says which node it belongs to), in its
    first segment; ``env``: more variables it must have (``SLURM_PROCID="1"``: rank 1)."""
    wanted = {"SLURMD_NODENAME": node, "NASALLOC_JOB_NAME": f"trial{trial_id}-s1", **env}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"nasalloc.profiler.slurm_task" not in cmdline:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text(errors="replace").split("\0")
                       if "=" in item)
        except OSError:
            continue
        if all(env.get(k) == v for k, v in wanted.items()):
            return int(entry.name)
    return None
