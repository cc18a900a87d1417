import numpy as np
import pytest

from nasalloc.workloads.digits import TRAIN_SAMPLES, DigitsWorkload, multiply_adds

from .ddp_launch import run_ranks

# A config that learns fast and cheaply: the rise over 3 epochs is large and robust.
QUICK = {"family": "mlp", "units": 64, "depth": 1, "activation": "relu", "dropout": 0.0, "lr": 0.01,
         "weight_decay": 1e-5, "optimizer": "adam", "batch_size": 64}


def test_space_reference_and_conditions():
    workload = DigitsWorkload()
    space = workload.search_space()
    reference = workload.reference_config()
    assert reference["family"] == "cnn" and "units" not in reference
    assert workload.relative_cost(reference) == pytest.approx(1.0)
    for config in space.sample_configuration(50):
        config = dict(config)
        assert ("channels" in config) == ("kernel_size" in config) == (config["family"] == "cnn")
        assert ("units" in config) == (config["family"] == "mlp")
        assert workload.relative_cost(config) > 0


def test_split_is_fixed_and_stratified():
    splits = DigitsWorkload().splits()
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (TRAIN_SAMPLES, 359, 360)
    again = DigitsWorkload().splits()
    assert np.array_equal(splits.val_x.numpy(), again.val_x.numpy())
    counts = np.bincount(splits.train_y.numpy(), minlength=10)
    assert counts.min() >= 100 and counts.max() <= 112  # ~60% of each class (~180)
    assert float(splits.train_x.max()) == 1.0 and float(splits.train_x.min()) == 0.0


def test_multiply_adds_match_the_built_model():
    workload = DigitsWorkload()
    for config in [workload.reference_config(), QUICK,
                   dict(workload.reference_config(), depth=3, channels=16, kernel_size=5)]:
        model = workload.build_model(config)
        weights = sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight"))
        if config["family"] == "mlp":
            assert multiply_adds(config) == weights  # every dense weight is used once per sample
        else:
            assert multiply_adds(config) > weights  # conv weights are reused at every position


def _train(config, epochs, seed=0):
    trainer = DigitsWorkload().make_trainer(config, seed=seed)
    return trainer, [trainer.train_epoch() for _ in range(epochs)]


def test_one_rank_learns_and_reports_the_epoch():
    _, results = _train(QUICK, 3)
    vals = [r.val_metric for r in results]
    assert [r.epoch for r in results] == [1, 2, 3]
    assert vals[-1] > vals[0] and vals[-1] > 0.8
    assert all(0 <= r.test_metric <= 1 and r.train_seconds > 0 and r.eval_seconds > 0 for r in results)
    assert results[0].samples == (TRAIN_SAMPLES // 64) * 64 and results[0].sync_seconds == 0.0


def test_cnn_reference_learns():
    workload = DigitsWorkload()
    _, results = _train(workload.reference_config(), 3)
    assert results[-1].val_metric > results[0].val_metric


def test_checkpoint_round_trip_continues_identically(tmp_path):
    config = dict(DigitsWorkload().reference_config(), dropout=0.3)  # dropout: RNG state matters
    workload = DigitsWorkload(lr_schedule="cosine", max_epochs=10)
    straight = workload.make_trainer(config, seed=3)
    for _ in range(2):
        straight.train_epoch()
    straight.save_checkpoint(str(tmp_path / "ckpt.pt"))
    expected = [straight.train_epoch().val_metric for _ in range(2)]
    # a fresh trainer (another seed, other state) loads the checkpoint and continues
    resumed = workload.make_trainer(config, seed=99)
    resumed.load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert resumed.epoch == 2
    results = [resumed.train_epoch() for _ in range(2)]
    assert [r.val_metric for r in results] == expected and results[-1].epoch == 4
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


@pytest.mark.slow
def test_two_gloo_ranks_learn_agree_and_match_one_rank(tmp_path):
    code = f"""
    import json
    from nasalloc.workloads.distributed import init_from_env
    from nasalloc.workloads.digits import DigitsWorkload
    ctx = init_from_env("cpu")
    trainer = DigitsWorkload().make_trainer({QUICK!r}, seed=0)
    results = [trainer.train_epoch() for _ in range(3)]
    trainer.save_checkpoint({str(tmp_path / "ddp.pt")!r})
    trainer.load_checkpoint({str(tmp_path / "ddp.pt")!r})
    after = trainer.train_epoch()
    ctx.destroy()
    print(json.dumps(dict(vals=[r.val_metric for r in results], tests=[r.test_metric for r in results],
                          samples=results[0].samples, sync=results[0].sync_seconds, after=after.epoch)))
    """
    ranks = run_ranks(code, 2)
    assert ranks[0]["vals"] == ranks[1]["vals"] and ranks[0]["tests"] == ranks[1]["tests"]
    vals = ranks[0]["vals"]
    assert vals[-1] > vals[0] and vals[-1] > 0.8
    assert ranks[0]["samples"] == (TRAIN_SAMPLES // 64) * 64 and ranks[0]["sync"] >= 0
    assert ranks[0]["after"] == 4 and (tmp_path / "ddp.pt").exists()
    # global batch policy: the same updates as one rank, up to float summation order
    _, single = _train(QUICK, 3)
    assert np.allclose(vals, [r.val_metric for r in single], atol=0.02)
