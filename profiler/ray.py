"""The Ray launcher: ``nasalloc profile --launcher ray`` starts every measuring job from inside a
fresh Ray actor, as Ray Tune starts each trial in an actor of its own.

So the start-up the profile measures (``NASALLOC_LAUNCH_TIME`` is taken before the actor is
asked for) includes what Ray pays per trial: a worker process for the actor, its imports of
Ray Tune, the actor's creation; then the job's ranks start as under the local launcher (the
same processes, pins and environment). A plan from such a profile predicts runs under Ray
(``validate --executor ray``, or the user's own Tuner); a profile from the local launcher does
not include Ray's share. What this does not measure of Ray Tune: its placement-group
bookkeeping and the TuneController's own loop (the validation report's re-simulation split
shows them as scheduling error).

The actor asks Ray for no resources: the profiler places jobs on GPUs (or cores) itself, as
it does with the local launcher, so Ray's accounting cannot disagree with it.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Optional

from .launch import LAUNCH_TIME_ENV, DDPJob, LocalLauncher, RunningJob

POLL_S = 0.05


class RayLauncher(LocalLauncher):
    name = "ray"

    @classmethod
    def from_environment(cls, gpus_per_node: Optional[int] = None, device: Optional[str] = None) -> "RayLauncher":
        from nasalloc.raysession import require_ray

        require_ray("--launcher ray")
        return cls(gpus_per_node)

    @staticmethod
    def detected() -> bool:
        return False  # never chosen by --launcher auto

    def start(self, job: DDPJob) -> RunningJob:
        import ray

        from nasalloc.raysession import start_local_ray

        start_local_ray()
        fields = asdict(job)
        fields["env"] = {**job.env, LAUNCH_TIME_ENV: repr(time.time())}  # before Ray makes the actor
        actor = _actor_class().options(num_cpus=0, num_gpus=0).remote()
        return RayJob(job.name, actor, actor.run.remote(fields), ray)


class RayJob(RunningJob):
    """A job running inside a Ray actor: done when the actor's ``run`` returns."""

    def __init__(self, name: str, actor, ref, ray_module):
        self.name, self._actor, self._ref, self._ray = name, actor, ref, ray_module
        self._outcome: Optional[tuple] = None
        self._reason: Optional[str] = None

    def poll(self) -> Optional[int]:
        return self.wait(0)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        if self._outcome is None:
            ready, _ = self._ray.wait([self._ref], timeout=timeout)
            if not ready:
                return None
            try:
                self._outcome = tuple(self._ray.get(self._ref))
            except Exception as err:  # the actor died (killed, or its worker crashed)
                self._outcome = (-9, self._reason or f"Ray actor died: {type(err).__name__}", "")
        return self._outcome[0]

    def terminate(self, reason: str = "terminated") -> None:
        if self._outcome is None:
            self._reason = reason
            self._ray.kill(self._actor)  # its ranks end with it (PR_SET_PDEATHSIG, nasalloc.lifetime)
            self.wait(None)

    @property
    def returncode(self) -> Optional[int]:
        return None if self._outcome is None else self._outcome[0]

    @property
    def failure(self) -> Optional[str]:
        if self._outcome is None or self._outcome[0] == 0:
            return self._reason
        return self._reason or self._outcome[1]

    def stderr_tail(self, lines: int = 20) -> str:
        return "" if self._outcome is None else "\n".join(self._outcome[2].splitlines()[-lines:])


def _actor_class():
    import ray

    @ray.remote
    class JobActor:
        def __init__(self):
            import ray.tune  # noqa: F401  (what a Tune trial's worker imports before its trainable runs)

        def run(self, fields: dict) -> tuple:
            running = LocalLauncher(None).start(DDPJob(**fields))
            running.wait(None)
            return running.returncode, running.failure, running.stderr_tail(40)

    return JobActor
