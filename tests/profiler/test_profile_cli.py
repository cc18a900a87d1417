"""`nasalloc profile` end to end on CPU (real gloo DDP on digits), and its input checks."""

import json
import os
import textwrap

import pytest

from nasalloc.cli import main
from nasalloc.profiler.request import load_config, parse_gpus
from nasalloc.errors import UserError
from nasalloc.simulator.scaling import ScalingModel
from nasalloc.simulator.timemodel import load_profile

FAST = ["--device", "cpu", "--workload", "digits", "--warmup", "1", "--timeout", "240", "--noise-epochs", "none"]


def run_cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory):
    """The CI command: a real CPU profile of digits on 1 and 2 ranks."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("profile") / "profile.json"
    done = subprocess.run([sys.executable, "-m", "nasalloc", "profile", "--gpus", "1,2", *FAST, "--epochs", "2",
                           "--noise-epochs", "0,3", "--noise-steps", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    return done, out


@pytest.mark.slow
def test_cpu_profile_measures_fits_and_loads_in_the_simulator(cpu_profile):
    done, out = cpu_profile
    assert done.returncode == 0, done.stderr
    profile = json.loads(out.read_text())
    assert profile["schema"] == "nasalloc.profile/1" and profile["complete"] is True
    assert profile["hardware"]["device"] == "cpu" and "not GPUs" in profile["hardware"]["ranks_are"]
    assert profile["software"]["torch"] and profile["workload"]["name"] == "digits"
    ddp = profile["measurements"]
    assert [(m["gpus"], m["kind"], m["nodes"]) for m in ddp] == [(1, "ddp", 1), (2, "ddp", 1)]
    for m in ddp:
        assert len(m["epoch_seconds"]) == 2 and min(m["epoch_seconds"]) > 0
        assert m["samples_per_second"] == pytest.approx([s / e for s, e in zip(m["samples"], m["epoch_seconds"])])
        assert m["startup_s"] > 0.1 and m["checkpoint_save_s"] > 0 and m["checkpoint_load_s"] > 0
        assert m["peak_memory_mb"] > 10 and m["eval_s"] > 0
    assert ddp[1]["backend"] == "gloo" and all(0 <= s <= 1 for s in ddp[1]["sync_fraction"])
    assert ddp[0]["torch_threads"] == 1 and ddp[1]["torch_threads"] == 1

    model = ScalingModel.from_dict(profile["model"])
    assert (model.measured_min_gpus, model.measured_max_gpus) == (1, 2)
    fit = profile["fit"]
    assert [p["gpus"] for p in fit["points"]] == [1, 2]
    for p, m in zip(fit["points"], ddp):  # two points, two parameters: the means are fitted exactly
        mean = sum(m["epoch_seconds"]) / 2
        assert p["measured_s"] == pytest.approx(mean) and model.epoch_seconds(p["gpus"]) == pytest.approx(mean)
    assert fit["loo_rel_error"] is not None and fit["loo_reason"] is None
    assert profile["overheads"]["startup_s"] == pytest.approx((ddp[0]["startup_s"] + ddp[1]["startup_s"]) / 2)

    loaded = load_profile(str(out))  # the simulator reads it
    assert loaded.model.reference_epoch_seconds(2) == pytest.approx(model.epoch_seconds(2))
    assert loaded.model.overhead("startup_s", 2) == pytest.approx(ddp[1]["startup_s"])

    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "g=1: 1 rank(s)" in done.stdout and "g=2: 2 rank(s)" in done.stdout
    assert "speedup" in done.stdout and "(extrapolated)" in done.stdout
    leftovers = [p.name for p in out.parent.iterdir()]
    assert sorted(leftovers) == ["profile.json", "profile.png", "profile_noise.png"]  # scratch files are gone


def test_cpu_profile_measures_the_gradient_noise_scale_along_training(cpu_profile):
    done, out = cpu_profile
    assert done.returncode == 0, done.stderr
    noise = json.loads(out.read_text())["noise_scale"]
    assert noise["schema"] == "nasalloc.noise_scale/1" and noise["method"] == "micro-batches on one rank"
    assert (noise["batch_small"], noise["batch_big"], noise["steps"]) == (64, 512, 16)  # digits' reference batch
    assert [p["epoch"] for p in noise["points"]] == [0, 3]
    before, after = noise["points"]
    for p in noise["points"]:
        low, high = p["b_noise_ci95"]
        assert p["b_noise"] > 0 and low < p["b_noise"] < high and p["b_noise_se"] > 0
        assert p["b_noise"] == pytest.approx(p["trace_sigma"] / p["grad_sq"])
        assert p["seconds"] > 0
    assert before["val_metric"] is None and 0.5 < after["val_metric"] <= 1.0  # trained 3 epochs in between
    assert before["grad_sq"] != after["grad_sq"]
    assert noise["elapsed_s"] >= noise["train_seconds"] + noise["measure_seconds"] > 0
    assert "noise scale at epoch 3: B_noise" in done.stdout
    assert out.with_name("profile_noise.png").read_bytes()[:4] == b"\x89PNG"
    one, two = json.loads(out.read_text())["measurements"]
    assert "noise_scale" not in one                       # one rank: no local vs reduced pair
    ddp = two["noise_scale"]                              # two ranks: from the warm-up epoch, for free
    assert ddp["method"].startswith("DDP") and ddp["epochs"] == [1]
    assert (ddp["batch_small"], ddp["batch_big"], ddp["steps"]) == (32, 64, 1078 // 64)
    assert isinstance(ddp["grad_sq"], float) and isinstance(ddp["trace_sigma"], float)
    assert "noise scale over the warm-up epoch(s), local vs all-reduced" in done.stdout


def test_old_profiles_without_a_noise_scale_still_load():
    from nasalloc.data import data_path

    assert "noise_scale" not in json.loads(data_path("default_profile.json").read_text())
    assert load_profile(None).model is not None  # an old profile (no noise_scale) still loads


@pytest.mark.slow
def test_fractional_gpus_run_colocated_trials_against_one_alone(tmp_path, capsys):
    out = tmp_path / "p.json"
    code, stdout, err = run_cli(["profile", "--gpus", "0.5", *FAST, "--warmup", "0", "--epochs", "1",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    assert "g=1 added" in stdout and "CPU cores, not a GPU" in stdout
    profile = json.loads(out.read_text())
    alone, shared = profile["measurements"]
    assert alone["kind"] == "ddp" and alone["gpus"] == 1
    assert shared["kind"] == "colocated" and shared["trials_per_gpu"] == 2 and shared["gpus"] == 0.5
    assert len(shared["trial_epoch_seconds"]) == 2 and "not a GPU" in shared["shared_device"]
    per_trial = sum(shared["epoch_seconds"]) / len(shared["epoch_seconds"])
    slowdown = profile["model"]["colocation"]["2"]
    assert slowdown == pytest.approx(per_trial / alone["epoch_seconds"][0])
    assert ScalingModel.from_dict(profile["model"]).epoch_seconds(0.5) == pytest.approx(per_trial)
    assert profile["settings"]["baseline_added"] is True


FAILING_WORKLOAD = """
from nasalloc.workloads.digits import DigitsWorkload
import os

class Flaky(DigitsWorkload):
    def make_trainer(self, config, seed, device="cpu"):
        if {condition}:
            raise RuntimeError("{message}")
        if os.environ.get("NASALLOC_JOB_NAME", "").endswith("coloc2-r0-1"):
            raise RuntimeError("co-located trial 1 cannot start")
        return super().make_trainer(config, seed, device)
"""


def _user_workload(tmp_path, monkeypatch, ranks, message, condition=None):
    condition = condition or f"os.environ.get('WORLD_SIZE') == '{ranks}'"
    name = f"flaky_{ranks}_{abs(hash(message + condition)) % 10000}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FAILING_WORKLOAD.format(condition=condition,
                                                                                 message=message)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return f"{name}:Flaky"


@pytest.mark.slow
def test_a_crashing_rank_stops_the_run_with_its_last_lines(tmp_path, monkeypatch, capsys):
    spec = _user_workload(tmp_path, monkeypatch, 1, "boom in the trainer")
    out = tmp_path / "res" / "p.json"
    code, _, err = run_cli(["profile", "--gpus", "1", "--device", "cpu", "--workload", spec, "--epochs", "1",
                            "--out", str(out)], capsys)
    assert code == 1
    assert "rank 0 exited with status 1" in err and "boom in the trainer" in err
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.slow
def test_out_of_memory_skips_and_a_failing_colocated_trial_ends_its_group(tmp_path, monkeypatch, capsys):
    import time

    # g=2 runs out of memory (skipped), then trial 1 of the two co-located ones crashes at start
    # while trial 0 waits for it at the start barrier.
    spec = _user_workload(tmp_path, monkeypatch, 2, "CUDA out of memory. Tried to allocate 2.00 GiB")
    out = tmp_path / "p.json"
    began = time.monotonic()
    code, stdout, err = run_cli(["profile", "--gpus", "1,2,0.5", "--device", "cpu", "--workload", spec,
                                 "--warmup", "0", "--epochs", "1", "--out", str(out)], capsys)
    assert "g=2: skipped, the hardware cannot hold it: out of memory" in stdout
    # a crash of a co-located trial is not a capacity problem: the run stops, naming it
    assert code == 1 and "coloc2-r0-1: rank 0 exited with status 1" in err and "trial 1 cannot start" in err
    assert time.monotonic() - began < 150  # trial 0 did not wait out its barrier
    profile = json.loads(out.read_text())  # what was measured before is kept, marked incomplete
    assert profile["complete"] is False and [m["gpus"] for m in profile["measurements"]] == [1]
    assert profile["skipped"][0]["gpus"] == 2 and "out of memory" in profile["skipped"][0]["reason"]


@pytest.mark.parametrize("argv, named", [
    (["--gpus", "0"], "'0'"),
    (["--gpus", "-1"], "'-1'"),
    (["--gpus", "abc"], "'abc'"),
    (["--gpus", "3/2"], "'3/2'"),
    (["--gpus", "0.4"], "'0.4'"),
    (["--gpus", "1,,2"], "''"),
    (["--gpus", str((os.cpu_count() or 1) + 1)], f"{(os.cpu_count() or 1) + 1}"),
    (["--gpus", "1/64"], "64 co-located"),
    (["--launcher", "slurm"], "slurm"),
    (["--launcher", "mpi"], "mpi"),
    (["--epochs", "0"], "--epochs"),
    (["--repeats", "0"], "--repeats"),
    (["--steps", "0"], "--steps"),
    (["--workload", "nosuch"], "'nosuch'"),
    (["--config", "{bad"], "--config"),
    (["--config", "[1]"], "list"),
    (["--config", "missing.json"], "missing.json"),
    (["--config", '{"nope": 1}'], "'nope'"),
    (["--data-dir", "/no/such/dir"], "/no/such/dir"),
    (["--gpus-per-node", "0"], "--gpus-per-node"),
    (["--noise-epochs", "1,x"], "'x'"),
    (["--noise-steps", "1"], "--noise-steps"),
    (["--device", "cuda"], "cuda"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, named, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    if argv[:2] == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is visible: --device cuda is valid here")
    base = {"--gpus": "1", "--device": "cpu", "--workload": "digits", "--out": "res/p.json"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = ["profile"] + [x for pair in base.items() for x in pair]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and named in lines[0], err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the results folder


def test_out_must_be_a_json_file(tmp_path, capsys):
    code, _, err = run_cli(["profile", "--gpus", "1", "--device", "cpu", "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err


def test_parse_gpus_accepts_counts_and_unit_fractions():
    assert parse_gpus("4,1,2,2") == [1, 2, 4]
    assert parse_gpus("1, 0.5,1/4,0.125") == [1, 0.5, 0.25, 0.125]
    assert parse_gpus("0.333") == [pytest.approx(1 / 3)]
    for bad in ("0", "1.5", "3/2", "2/3", "x", "1/0"):
        with pytest.raises(UserError, match="--gpus value"):
            parse_gpus(bad)


def test_config_updates_the_reference(tmp_path):
    reference = {"lr": 0.1, "depth": 2}
    assert load_config(None, reference) == reference
    assert load_config('{"lr": 0.5}', reference) == {"lr": 0.5, "depth": 2}
    file = tmp_path / "c.json"
    file.write_text('{"depth": 3}')
    assert load_config(str(file), reference) == {"lr": 0.1, "depth": 3}
    assert load_config('{"units": 64}', reference, ["lr", "depth", "units"])["units"] == 64
    with pytest.raises(UserError, match="'lrr' is not a hyperparameter"):
        load_config('{"lrr": 1}', reference, ["lr", "depth"])


def _worker_pids(marker: str) -> list:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read().decode(errors="replace")
            except OSError:
                continue
            if "nasalloc.profiler.worker" in cmdline and marker in cmdline:
                pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_ranks_end_when_the_profiler_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed" / "p.json"
    parent = subprocess.Popen([sys.executable, "-m", "nasalloc", "profile", "--gpus", "1", "--device", "cpu",
                               "--workload", "digits", "--warmup", "0", "--epochs", "500", "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _worker_pids(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _worker_pids(str(tmp_path)), "the worker never started"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 60  # a loaded CI machine can take seconds to import torch
    while _worker_pids(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _worker_pids(str(tmp_path)) == []


@pytest.mark.slow
def test_repeats_run_in_rounds_over_the_gpu_counts(tmp_path, capsys):
    """A passing load must not land on every repeat of one g: repeat 1 of each g, then repeat 2."""
    out = tmp_path / "p.json"
    code, stdout, err = run_cli(["profile", "--gpus", "2,1", *FAST, "--epochs", "1", "--repeats", "2",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    profile = json.loads(out.read_text())
    assert [(m["gpus"], m["repeat"]) for m in profile["measurements"]] == [(1, 0), (2, 0), (1, 1), (2, 1)]
    assert "g=1: repeat 1 of 2: start-up" in stdout and "g=2: repeat 1 of 2: start-up" in stdout
    assert profile["variability"].get("startup_cv") is not None  # pooled over the two launches of each g
