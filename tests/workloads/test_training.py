import pytest

from nasalloc.errors import UserError
from nasalloc.workloads.training import epoch_permutation, global_batch_size, shard_bounds


@pytest.mark.parametrize("n, parts", [(64, 1), (64, 2), (64, 3), (10, 4), (7, 7)])
def test_shards_are_disjoint_contiguous_and_cover_everything(n, parts):
    bounds = [shard_bounds(n, parts, i) for i in range(parts)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(parts - 1))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_epoch_order_is_seeded_and_changes_per_epoch():
    a, b = epoch_permutation(100, seed=3, epoch=1), epoch_permutation(100, seed=3, epoch=1)
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == list(range(100))
    assert a.tolist() != epoch_permutation(100, seed=3, epoch=2).tolist()
    assert a.tolist() != epoch_permutation(100, seed=4, epoch=1).tolist()


def test_batch_policies():
    assert global_batch_size(64, "global", 4) == 64  # split across the ranks
    assert global_batch_size(64, "per_gpu", 4) == 256  # grows with the ranks
    with pytest.raises(UserError, match="global batch 2 is smaller than the 4 ranks"):
        global_batch_size(2, "global", 4)
    with pytest.raises(UserError, match="batch policy 'sometimes'"):
        global_batch_size(64, "sometimes", 1)


def test_per_gpu_policy_trains_with_a_larger_global_batch():
    from nasalloc.workloads.digits import DigitsWorkload

    config = {"family": "mlp", "units": 32, "depth": 1, "activation": "relu", "dropout": 0.0, "lr": 0.01,
              "weight_decay": 0.0, "optimizer": "adam", "batch_size": 64}
    trainer = DigitsWorkload(batch_policy="per_gpu").make_trainer(config, seed=0)
    assert trainer.global_batch == 64 and trainer.train_epoch().samples == (1078 // 64) * 64
    with pytest.raises(UserError, match="larger than the 1078 training samples"):
        DigitsWorkload().make_trainer(dict(config, batch_size=2048), seed=0)
