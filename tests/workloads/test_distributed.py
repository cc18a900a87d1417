import pytest

from nasalloc.errors import UserError
from nasalloc.workloads import distributed
from nasalloc.workloads.distributed import init_from_env

from .ddp_launch import run_ranks


def test_single_process_without_world_size(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert ctx.all_reduce_sum([1.0, 2.5]) == [1.0, 2.5]
    ctx.barrier()
    ctx.destroy()


def test_bad_environment_is_a_user_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE='two'"):
        init_from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(UserError, match="RANK=5"):
        init_from_env("cpu")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="MASTER_ADDR"):
        init_from_env("cpu")


def test_unknown_device_is_a_user_error():
    with pytest.raises(UserError, match="'tpu'"):
        distributed.resolve_device("tpu")


@pytest.mark.slow
def test_two_gloo_ranks_reduce_and_broadcast():
    code = """
    import json, torch
    from nasalloc.workloads.distributed import init_from_env
    ctx = init_from_env("cpu")
    total = ctx.all_reduce_sum([ctx.rank + 1.0])
    peak = ctx.all_reduce_max([10.0 * ctx.rank])
    shared = ctx.broadcast_floats([42.0 if ctx.is_main else -1.0])
    ctx.barrier()
    out = dict(rank=ctx.rank, world=ctx.world_size, backend=ctx.backend, total=total, peak=peak,
               shared=shared, threads=torch.get_num_threads())
    ctx.destroy()
    print(json.dumps(out))
    """
    results = run_ranks(code, 2)
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["world"] == 2 and r["backend"] == "gloo" and r["threads"] == 1
        assert r["total"] == [3.0] and r["peak"] == [10.0] and r["shared"] == [42.0]
