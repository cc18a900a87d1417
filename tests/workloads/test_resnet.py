import pickle

import numpy as np
import pytest

from nasalloc.errors import UserError
from nasalloc.workloads.resnet import DEPTHS, ResNetWorkload, multiply_adds, synthetic_images

from .ddp_launch import run_ranks

TINY_DATA = dict(steps_per_epoch=6, synthetic_train=512, synthetic_eval=128)
TINY = {"depth": 8, "base_channels": 8, "batch_size": 32, "lr": 0.1, "weight_decay": 1e-4, "optimizer": "sgd"}


def _hooked_multiply_adds(model):
    import torch

    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            total[0] += output[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features

    for module in model.modules():
        module.register_forward_hook(hook)
    model.eval()
    model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    return total[0]


@pytest.mark.parametrize("depth", DEPTHS)
def test_analytic_multiply_adds_match_the_model(depth):
    config = dict(ResNetWorkload().reference_config(), depth=depth, base_channels=8)
    model = ResNetWorkload().build_model(config)
    assert multiply_adds(config) == _hooked_multiply_adds(model)
    blocks = sum(1 for m in model.modules() if type(m).__name__ == "BasicBlock")
    assert blocks == 3 * (depth - 2) // 6


def test_relative_cost_follows_flops():
    workload = ResNetWorkload()
    reference = workload.reference_config()
    assert workload.relative_cost(reference) == pytest.approx(1.0)
    assert workload.relative_cost(dict(reference, base_channels=32)) == pytest.approx(4.0, rel=0.02)
    assert workload.relative_cost(dict(reference, depth=32)) > workload.relative_cost(dict(reference, depth=8))


def test_synthetic_data_is_said_plainly_and_seeded():
    workload = ResNetWorkload(**TINY_DATA)
    assert workload.synthetic_data and "SYNTHETIC" in workload.data_message
    assert workload.describe()["synthetic_data"] is True
    a, b = synthetic_images(64, 0, 1), synthetic_images(64, 0, 1)
    assert np.array_equal(a[0], b[0]) and a[0].shape == (64, 3, 32, 32) and a[0].dtype == np.uint8
    assert not np.array_equal(a[0], synthetic_images(64, 0, 2)[0])


def test_one_rank_learns_on_synthetic_images():
    trainer = ResNetWorkload(**TINY_DATA).make_trainer(TINY, seed=0)
    results = [trainer.train_epoch() for _ in range(4)]
    vals = [r.val_metric for r in results]
    assert max(vals[2:]) > vals[0] + 0.15, vals
    assert results[0].samples == 6 * 32  # steps_per_epoch caps the epoch


def _write_cifar(folder, per_batch=40, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, per_batch))}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_real_cifar_batches_load_from_data_dir(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    workload = ResNetWorkload(data_dir=str(tmp_path), steps_per_epoch=2)
    assert not workload.synthetic_data and "CIFAR-10 from" in workload.data_message
    splits = workload.splits()
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (180, 20, 40)
    assert tuple(splits.train_x.shape[1:]) == (3, 32, 32)
    result = workload.make_trainer(TINY, seed=0).train_epoch()
    assert result.samples == 64 and 0 <= result.val_metric <= 1


def test_bad_data_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="is not a directory"):
        ResNetWorkload(data_dir=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no CIFAR-10 python batch 'data_batch_1'"):
        ResNetWorkload(data_dir=str(tmp_path / "empty")).splits()
    _write_cifar(tmp_path / "broken")
    (tmp_path / "broken" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="test_batch is not a CIFAR-10 python batch"):
        ResNetWorkload(data_dir=str(tmp_path / "broken")).splits()


@pytest.mark.slow
def test_two_gloo_ranks_learn_and_agree():
    code = f"""
    import json
    from nasalloc.workloads.distributed import init_from_env
    from nasalloc.workloads.resnet import ResNetWorkload
    ctx = init_from_env("cpu")
    trainer = ResNetWorkload(**{TINY_DATA!r}).make_trainer({TINY!r}, seed=0)
    results = [trainer.train_epoch() for _ in range(4)]
    ctx.destroy()
    print(json.dumps(dict(vals=[r.val_metric for r in results], samples=results[0].samples,
                          sync=[r.sync_seconds for r in results])))
    """
    ranks = run_ranks(code, 2, timeout_s=240)
    assert ranks[0]["vals"] == ranks[1]["vals"]
    vals = ranks[0]["vals"]
    assert max(vals[2:]) > vals[0] + 0.15, vals
    assert ranks[0]["samples"] == 6 * 32 and all(s >= 0 for s in ranks[0]["sync"])
