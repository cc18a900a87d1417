"""The DDP probe reads a rank's local gradient and the all-reduced one, exactly."""

import pytest

pytest.importorskip("torch")

from .ddp_launch import run_ranks  # noqa: E402

CODE = """
import copy, json, torch
from nasalloc.workloads.distributed import init_from_env
from nasalloc.workloads.digits import DigitsWorkload
from nasalloc.workloads.training import epoch_permutation, shard_bounds
from nasalloc.profiler.noisescale import DDPNoiseProbe

ctx = init_from_env("cpu")
workload = DigitsWorkload()
config = dict(workload.reference_config(), dropout=0.0, batch_size=64)   # no dropout: reproducible by hand
trainer = workload.make_trainer(config, seed=0)
trainer.steps_per_epoch = 3
initial = copy.deepcopy(trainer.module.state_dict())
probe = trainer.noise_probe = DDPNoiseProbe()
trainer.train_epoch()
estimate = probe.estimate(ctx, trainer.global_batch)

# By hand, on this process alone: step 1's gradients at the initial weights.
model = workload.build_model(config)
model.load_state_dict(initial)
data = trainer.data
order = epoch_permutation(len(data.train_y), 0, 1)[:64]
def sq_norm(indices):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(data.train_x[indices]), data.train_y[indices]).backward()
    return float(sum(p.grad.double().pow(2).sum() for p in model.parameters()))
start, end = shard_bounds(64, ctx.world_size, ctx.rank)
print(json.dumps({"local": probe.local_sq, "global": probe.global_sq, "local_hand": sq_norm(order[start:end]),
                  "global_hand": sq_norm(order), "estimate": estimate.to_dict()}))
"""


def test_local_and_all_reduced_gradient_norms_match_a_hand_computation():
    ranks = run_ranks(CODE, world_size=2, timeout_s=180)
    for rank in ranks:
        assert len(rank["local"]) == len(rank["global"]) == 3
        assert rank["local"][0] == pytest.approx(rank["local_hand"], rel=1e-4)
        assert rank["global"][0] == pytest.approx(rank["global_hand"], rel=1e-4)
        assert rank["global"] == pytest.approx(ranks[0]["global"], rel=1e-9)   # the same reduced gradient
    assert ranks[0]["local"][0] != pytest.approx(ranks[1]["local"][0], rel=1e-3)  # different shards
    for step in range(3):
        # mean over ranks of |g_r|^2 >= |mean g_r|^2 (equality only if the shards agree)
        assert (ranks[0]["local"][step] + ranks[1]["local"][step]) / 2 > ranks[0]["global"][step]
    estimate = ranks[0]["estimate"]
    assert (estimate["batch_small"], estimate["batch_big"], estimate["steps"]) == (32, 64, 3)
    assert estimate == ranks[1]["estimate"]
