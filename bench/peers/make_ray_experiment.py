"""A small real Ray Tune experiment folder, committed as tests/fixtures/ray_experiment/.

Run in the peers' virtual environment (bench/peers/README.md), about 25 s on 2 cores:

    .peers/bin/python bench/peers/make_ray_experiment.py --out /tmp/ray_exp
    then copy /tmp/ray_exp/asha_small to tests/fixtures/ray_experiment/asha_small without
    params.pkl, tuner.pkl and events.out.tfevents.* (what nasalloc does not read)

ASHA (max_t 9, grace 1, eta 3) over 8 configs of a function trainable that sleeps 50 ms per
iteration; each trial holds two bundles of the custom resource ``gpu_slot`` (so
``nasalloc import ray --gpu-resource gpu_slot`` must find 2 GPUs per trial).
"""

import argparse
import math
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def trainable(config):
    from ray import tune

    for i in range(1, 10):
        time.sleep(0.05)
        acc = 1 - math.exp(-i * config["lr"] * 10) * (1 - config["width"] / 100)
        tune.report({"val_acc": acc, "loss": 1 - acc})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    ray.init(num_cpus=2, resources={"gpu_slot": 8}, object_store_memory=80_000_000,
             include_dashboard=False, log_to_driver=False)
    bundles = tune.PlacementGroupFactory([{"CPU": 0.5, "gpu_slot": 1}] * 2)
    tuner = tune.Tuner(
        tune.with_resources(trainable, bundles),
        param_space={"lr": tune.loguniform(1e-3, 1e-1), "width": tune.randint(8, 64),
                     "act": tune.choice(["relu", "tanh"]), "opt": {"name": tune.choice(["sgd", "adam"])}},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", num_samples=8,
                                    scheduler=ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3)),
        run_config=tune.RunConfig(name="asha_small", storage_path=os.path.abspath(args.out), verbose=0))
    tuner.fit()


if __name__ == "__main__":
    main()
