"""``digits``: small CNNs and MLPs on scikit-learn's bundled handwritten digits (8x8 grey
images, 10 classes, 1797 samples; no download). A NAS space over architecture and training
hyperparameters whose epoch takes a few hundredths of a second on one CPU core, so a
benchmark of hundreds of full 81-epoch learning curves is cheap to record.

The split is fixed by ``data_seed`` (stratified 60/20/20 train/val/test), the same for every
trial; a trial's ``seed`` sets its initial weights, dropout and shuffling.
"""

from __future__ import annotations

from typing import Optional

from .training import ClassifierWorkload

FAMILIES = ("cnn", "mlp")
ACTIVATIONS = ("relu", "tanh", "gelu")
BATCH_SIZES = (32, 64, 128, 256)
IMAGE_SIDE = 8
CLASSES = 10
TRAIN_SAMPLES = 1078  # 60% of 1797, stratified (checked in the tests)


def conv_side(layer: int) -> int:
    """Image side that conv layer ``layer`` (0-based) sees: max-pooling halves it after
    each of the first two layers (8 -> 4 -> 2)."""
    return IMAGE_SIDE >> min(layer, 2)


def multiply_adds(config: dict) -> int:
    """Multiply-adds of one forward pass of one sample (weights only; activations, pooling
    and biases are negligible beside them)."""
    depth = int(config["depth"])
    if config["family"] == "cnn":
        channels, kernel = int(config["channels"]), int(config["kernel_size"])
        total, fan_in = 0, 1
        for layer in range(depth):
            total += fan_in * channels * kernel * kernel * conv_side(layer) ** 2
            fan_in = channels
        return total + channels * conv_side(depth) ** 2 * CLASSES
    units = int(config["units"])
    return IMAGE_SIDE ** 2 * units + (depth - 1) * units * units + units * CLASSES


def layer_count(config: dict) -> int:
    return int(config["depth"]) + 1


def activation_elements(config: dict) -> int:
    """Activations of the hidden layers per sample (elementwise work: activation, pooling)."""
    depth = int(config["depth"])
    if config["family"] == "cnn":
        return sum(int(config["channels"]) * conv_side(layer) ** 2 for layer in range(depth))
    return depth * int(config["units"])


# Seconds of one epoch on one CPU core = a linear model in what the config does per epoch.
# Tiny models are dominated by per-step framework overhead and elementwise work, not by
# multiply-adds, so FLOPs alone mispredict them. The coefficients were fitted (non-negative
# least squares) to 60 random configs timed on one core of the machine that recorded the
# benchmark; nasalloc/data/digits_curves.md checks the model against all benchmark configs.
SECONDS_PER_STEP_LAYER = 1.36e-4
SECONDS_PER_TRAIN_MAC = 1.21e-11      # one multiply-add of forward + backward (3x forward)
SECONDS_PER_ACTIVATION = 1.36e-8      # one hidden activation of one training sample
SECONDS_PER_EPOCH = 8.2e-4            # fixed: shuffling, evaluation set-up


def estimated_epoch_seconds(config: dict) -> float:
    batch = int(config["batch_size"])
    steps = TRAIN_SAMPLES // batch
    samples = steps * batch
    return (SECONDS_PER_STEP_LAYER * steps * layer_count(config)
            + SECONDS_PER_TRAIN_MAC * 3 * multiply_adds(config) * samples
            + SECONDS_PER_ACTIVATION * activation_elements(config) * samples
            + SECONDS_PER_EPOCH)


class DigitsWorkload(ClassifierWorkload):
    name = "digits"
    metric_name = "accuracy"
    mode = "max"

    def __init__(self, data_seed: int = 0, batch_policy: str = "global", lr_schedule: Optional[str] = None,
                 max_epochs: int = 81):
        self.data_seed = int(data_seed)
        self.batch_policy = batch_policy
        self.lr_schedule = lr_schedule
        self.max_epochs = int(max_epochs)
        self._splits = None
        self._reference = None

    def search_space(self, seed: Optional[int] = None):
        from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer

        space = ConfigurationSpace(seed=seed)
        family = Categorical("family", FAMILIES, default="cnn")
        channels = Integer("channels", (8, 64), log=True, default=32)
        kernel = Categorical("kernel_size", (3, 5), default=3)
        units = Integer("units", (32, 512), log=True, default=128)
        space.add([
            family, channels, kernel, units,
            Integer("depth", (1, 3), default=2),
            Categorical("activation", ACTIVATIONS, default="relu"),
            Float("dropout", (0.0, 0.5), default=0.1),
            Float("lr", (1e-4, 0.1), log=True, default=3e-3),
            Float("weight_decay", (1e-6, 1e-2), log=True, default=1e-4),
            Categorical("optimizer", ("sgd", "adam"), default="adam"),
            Categorical("batch_size", BATCH_SIZES, default=64),
        ])
        space.add([EqualsCondition(channels, family, "cnn"), EqualsCondition(kernel, family, "cnn"),
                   EqualsCondition(units, family, "mlp")])
        return space

    def reference_config(self) -> dict:
        # built once: relative_cost asks for it per config (250 rows = 250 spaces built, ~1 s)
        if self._reference is None:
            self._reference = dict(self.search_space().get_default_configuration())
        return dict(self._reference)

    def relative_cost(self, config: dict) -> float:
        """Estimated epoch seconds of ``config`` over those of the reference config."""
        return estimated_epoch_seconds(config) / estimated_epoch_seconds(self.reference_config())

    def splits(self):
        """The fixed train/val/test tensors (built once per process)."""
        if self._splits is None:
            import numpy as np
            import torch
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            from .training import TensorSplits

            images, labels = load_digits(return_X_y=True)
            images = (images / 16.0).astype(np.float32).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
            x_train, x_rest, y_train, y_rest = train_test_split(
                images, labels, train_size=0.6, stratify=labels, random_state=self.data_seed)
            x_val, x_test, y_val, y_test = train_test_split(
                x_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=self.data_seed)
            tensor = lambda a, dtype: torch.as_tensor(a, dtype=dtype)  # noqa: E731
            self._splits = TensorSplits(tensor(x_train, torch.float32), tensor(y_train, torch.int64),
                                        tensor(x_val, torch.float32), tensor(y_val, torch.int64),
                                        tensor(x_test, torch.float32), tensor(y_test, torch.int64))
        return self._splits

    def build_model(self, config: dict):
        import torch.nn as nn

        activation = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[config["activation"]]
        dropout, depth = float(config["dropout"]), int(config["depth"])
        layers: list = []
        if config["family"] == "cnn":
            channels, kernel = int(config["channels"]), int(config["kernel_size"])
            fan_in = 1
            for layer in range(depth):
                layers += [nn.Conv2d(fan_in, channels, kernel, padding=kernel // 2), activation()]
                if layer < 2:
                    layers.append(nn.MaxPool2d(2))
                fan_in = channels
            layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * conv_side(depth) ** 2, CLASSES)]
        else:
            units = int(config["units"])
            layers.append(nn.Flatten())
            fan_in = IMAGE_SIDE ** 2
            for _ in range(depth):
                layers += [nn.Linear(fan_in, units), activation(), nn.Dropout(dropout)]
                fan_in = units
            layers.append(nn.Linear(fan_in, CLASSES))
        return nn.Sequential(*layers)


    def describe(self) -> dict:
        info = super().describe()
        info.update(samples_per_epoch=TRAIN_SAMPLES, synthetic_data=False, data_seed=self.data_seed)
        return info


#: shuffled passes over the training set in one epoch of ``digits-long``
LONG_PASSES = 20


class LongDigitsWorkload(DigitsWorkload):
    """digits whose epoch is LONG_PASSES passes over the training set (reshuffled together), so
    the reference config's epoch takes about 1 s on one CPU core instead of a few hundredths:
    a setting where start-up and the runner's round trips weigh against training about as much
    as they do on a GPU cluster, rather than dominating. Same space, model and relative costs;
    its own learning curves (bench/data/digits_long_curves.csv.gz)."""

    name = "digits-long"

    def splits(self):
        if getattr(self, "_long", None) is None:
            from .training import TensorSplits

            base = super().splits()
            self._long = TensorSplits(base.train_x.repeat(LONG_PASSES, 1, 1, 1), base.train_y.repeat(LONG_PASSES),
                                      base.val_x, base.val_y, base.test_x, base.test_y)
        return self._long

    def describe(self) -> dict:
        info = super().describe()
        info.update(samples_per_epoch=TRAIN_SAMPLES * LONG_PASSES, passes_per_epoch=LONG_PASSES)
        return info
