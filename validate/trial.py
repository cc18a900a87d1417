"""One rank of a trial segment: ``python -m nasalloc.validate.trial --spec FILE``.

Every rank of the job runs this module with the same spec; the launcher gives each its
RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (and CUDA_VISIBLE_DEVICES). The segment
runs from start (or from the checkpoint) until the runner says pause or stop, or the trial
reaches ``max_epochs``:

1. join the process group, build the trainer, load the checkpoint when resuming;
2. train one epoch; rank 0 reports it to the runner and waits for its decision, which it
   broadcasts to the other ranks;
3. continue: next epoch; pause: save the checkpoint (collective) and exit 0; stop: exit 0.

Exit status 0 only after a pause or stop decision; anything else (an exception, a lost
runner, a killed sibling) exits non-zero and the runner records the segment as failed.
The spec is a JSON file the runner writes: workload, config, seed, checkpoint, resume,
device, max_epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .roundtrip import connect_from_env, report_epoch

EXIT_LOST_RUNNER = 3


def run_segment(spec: dict) -> int:
    from nasalloc.simulator.allocation import checkpoint_due
    from nasalloc.workloads.distributed import init_from_env
    from nasalloc.workloads.registry import load_workload

    ctx = init_from_env(spec.get("device", "cpu"))
    clean = False  # the segment ended by a decision every rank saw
    link = connect_from_env(ctx)
    try:
        workload = load_workload(spec["workload"])
        trainer = workload.make_trainer(spec["config"], int(spec["seed"]), ctx.device.split(":")[0])
        load_s = 0.0
        checkpoint = spec["checkpoint"]
        if spec.get("resume") and os.path.exists(checkpoint):
            began = time.perf_counter()
            trainer.load_checkpoint(checkpoint)
            load_s = time.perf_counter() - began
        if link:
            link.send({"type": "ready", "epoch": int(trainer.epoch), "load_s": load_s})
        max_epochs = int(spec["max_epochs"])
        while True:
            result = trainer.train_epoch()
            decision = report_epoch(link, ctx, result)  # the round trip the profiler measures
            if decision == "continue" and result.epoch >= max_epochs:
                decision = "stop"  # never train past the budget, whatever was said
            if decision == "pause":
                began = time.perf_counter()
                trainer.save_checkpoint(checkpoint)
                ctx.barrier()
                if link:
                    link.send({"type": "checkpointed", "epoch": result.epoch,
                               "save_s": time.perf_counter() - began})
            elif decision == "continue" and checkpoint_due(result.epoch, spec.get("checkpoint_every"), max_epochs):
                began = time.perf_counter()  # --checkpoint-every: a node failure loses less
                trainer.save_checkpoint(checkpoint)
                ctx.barrier()
                if link:
                    link.send({"type": "saved", "epoch": result.epoch, "save_s": time.perf_counter() - began})
            if decision != "continue":
                clean = True
                return 0
    finally:
        if link:
            link.close()
        ctx.destroy(wait_for_peers=clean)


def main(argv: list[str] | None = None) -> int:
    # first: a rank must not outlive the runner (it would hold its GPUs until its next report)
    from nasalloc.lifetime import end_with_parent, launcher_pid_from

    end_with_parent(launcher_pid_from(os.environ))
    parser = argparse.ArgumentParser(prog="python -m nasalloc.validate.trial")
    parser.add_argument("--spec", required=True, help="JSON file the runner wrote for this segment")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as handle:
        spec = json.load(handle)
    try:
        code = run_segment(spec)
    except ConnectionError as err:
        print(f"trial {spec.get('trial_id')}: lost the runner: {err}", file=sys.stderr)
        return EXIT_LOST_RUNNER
    # The segment is over (checkpoint written, process group destroyed): skip the interpreter's
    # teardown of torch, which takes seconds on a busy machine while the slot stays taken.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
