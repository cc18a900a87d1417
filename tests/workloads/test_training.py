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


def test_lr_rule_is_rasdas_linear_for_sgd_sqrt_for_adam():
    from nasalloc.workloads.training import lr_scale

    assert lr_scale("sgd", "per_gpu", 4) == 4.0
    assert lr_scale("adam", "per_gpu", 4) == 2.0
    assert lr_scale("sgd", "per_gpu", 1) == 1.0
    assert lr_scale("sgd", "global", 8) == 1.0  # the global batch does not grow: nothing to scale


@pytest.mark.parametrize("optimizer, factor", [("sgd", 2.0), ("adam", 2.0 ** 0.5)])
def test_per_gpu_checkpoint_resumed_on_two_ranks_trains_at_the_rescaled_rate(tmp_path, optimizer, factor):
    """A trial resized 1 -> 2 ranks under per_gpu (its global batch doubles) continues at the
    rate RASDA's rule gives two ranks, and the cosine schedule keeps its position."""
    from tests.workloads.ddp_launch import run_ranks
    from nasalloc.workloads.digits import DigitsWorkload

    config = {"family": "mlp", "units": 16, "depth": 1, "activation": "relu", "dropout": 0.0, "lr": 0.01,
              "weight_decay": 0.0, "optimizer": optimizer, "batch_size": 64}
    workload = DigitsWorkload(batch_policy="per_gpu")
    workload.lr_schedule = "cosine"
    one = workload.make_trainer(config, seed=3)
    one.train_epoch()
    one.train_epoch()
    lr_after_two_epochs = one.current_lr()
    ckpt = tmp_path / "ckpt.pt"
    one.save_checkpoint(str(ckpt))
    results = run_ranks(f"""
        import json
        from nasalloc.workloads.digits import DigitsWorkload
        from nasalloc.workloads.distributed import init_from_env
        ctx = init_from_env("cpu")
        w = DigitsWorkload(batch_policy="per_gpu")
        w.lr_schedule = "cosine"
        t = w.make_trainer({config!r}, seed=3)
        fresh = t.current_lr()
        t.load_checkpoint({str(ckpt)!r})
        resumed = t.current_lr()
        r = t.train_epoch()
        print(json.dumps({{"fresh": fresh, "resumed": resumed, "epoch": r.epoch, "batch": t.global_batch,
                          "after": t.current_lr()}}))
    """, world_size=2)
    for r in results:
        assert r["batch"] == 128 and r["epoch"] == 3
        assert r["fresh"] == pytest.approx(0.01 * factor)  # a new 2-rank trial starts at the scaled rate
        assert r["resumed"] == pytest.approx(lr_after_two_epochs * factor)  # same schedule point, new size
    # one more cosine step from the rescaled point, as the one-rank run would take it, times the factor
    one.train_epoch()
    assert results[0]["after"] == pytest.approx(one.current_lr() * factor, rel=1e-9)
