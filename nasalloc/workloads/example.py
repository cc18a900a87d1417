"""A user workload in a few lines: a small MLP on scikit-learn's breast-cancer data.

Load it with ``--workload nasalloc.workloads.example:make_workload`` (any importable
``package.module:factory`` works the same way). It reuses nasalloc's DDP classifier loop
(:class:`~nasalloc.workloads.training.ClassifierTrainer`); a workload may instead return its
own :class:`~nasalloc.workloads.base.Trainer`.
"""

from __future__ import annotations

from nasalloc.workloads.base import Workload


class BreastCancerMLP(Workload):
    name = "breast-cancer-mlp"
    metric_name = "accuracy"
    mode = "max"

    def search_space(self, seed=None):
        from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer

        return ConfigurationSpace(seed=seed, space=[
            Integer("units", (8, 128), log=True, default=32),
            Float("lr", (1e-4, 1e-1), log=True, default=1e-2),
            Categorical("batch_size", (16, 32, 64), default=32),
        ])

    def reference_config(self) -> dict:
        return dict(self.search_space().get_default_configuration())

    def relative_cost(self, config: dict) -> float:
        return config["units"] / self.reference_config()["units"]  # one hidden layer: cost ~ units

    def make_trainer(self, config: dict, seed: int, device: str = "cpu"):
        import torch
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        from nasalloc.workloads.training import ClassifierTrainer, TensorSplits

        x, y = load_breast_cancer(return_X_y=True)
        x = StandardScaler().fit_transform(x).astype("float32")
        x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
        data = TensorSplits(torch.from_numpy(x_train), torch.from_numpy(y_train),
                            torch.from_numpy(x_val), torch.from_numpy(y_val))
        units = int(config["units"])
        build = lambda: torch.nn.Sequential(  # noqa: E731
            torch.nn.Linear(x.shape[1], units), torch.nn.ReLU(), torch.nn.Linear(units, 2))
        return ClassifierTrainer(build, data, seed=seed, device=device, optimizer="adam", lr=config["lr"],
                                 weight_decay=0.0, batch_size=config["batch_size"])


def make_workload() -> Workload:
    return BreastCancerMLP()
