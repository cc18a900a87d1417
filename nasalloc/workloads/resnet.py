"""``resnet``: CIFAR-style ResNets (He et al. 2016: 3 stages of basic blocks, depth 6n+2) on
CIFAR-10-shaped images, the workload for profiling real GPUs (NCCL, one device per rank).

Data: the real CIFAR-10 when ``data_dir`` holds the standard python-pickle batches
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``; the folder itself or its
``cifar-10-batches-py`` subfolder); the last 5,000 training images are the validation set.
Otherwise **synthetic** images of the same shape (seeded: a smooth random pattern per class
plus noise, so accuracy rises as it trains but means nothing about CIFAR); ``synthetic_data``
and ``data_message`` say which. Images stay uint8 in memory and are normalised inside the
model. ``steps_per_epoch`` caps an epoch for large data or quick profiling.

Batch norm statistics are per rank (plain BatchNorm under DDP, as most CIFAR recipes run).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

from ..errors import UserError
from .training import ClassifierWorkload

DEPTHS = (8, 14, 20, 32)           # 6n + 2 with n = 1, 2, 3, 5 basic blocks per stage
BASE_CHANNELS = (8, 16, 32, 64)    # width multipliers 0.5, 1, 2, 4 of the original 16
BATCH_SIZES = (64, 128, 256, 512)
SIDE, CLASSES = 32, 10
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
VALIDATION_IMAGES = 5000


def stage_layout(config: dict) -> list[tuple[int, int, int]]:
    """(channels, blocks, image side) of the three stages."""
    blocks = (int(config["depth"]) - 2) // 6
    base = int(config["base_channels"])
    return [(base * 2 ** s, blocks, SIDE >> s) for s in range(3)]


def multiply_adds(config: dict) -> int:
    """Multiply-adds of one forward pass of one image (convolutions and the classifier)."""
    base = int(config["base_channels"])
    total = 3 * base * 9 * SIDE * SIDE  # stem
    fan_in = base
    for channels, blocks, side in stage_layout(config):
        for block in range(blocks):
            total += fan_in * channels * 9 * side * side + channels * channels * 9 * side * side
            if fan_in != channels:
                total += fan_in * channels * side * side  # 1x1 projection shortcut
            fan_in = channels
    return total + fan_in * CLASSES


def load_cifar10(data_dir) -> tuple:
    """(train_x, train_y, test_x, test_y) as uint8 NCHW / int64 numpy arrays."""
    import numpy as np

    root = Path(data_dir).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [name for name in CIFAR_TRAIN_BATCHES + ["test_batch"] if not (root / name).is_file()]
    if missing:
        raise UserError(f"--data-dir {data_dir}: no CIFAR-10 python batch {missing[0]!r} there "
                        f"(expected data_batch_1..5 and test_batch from cifar-10-python.tar.gz)")

    def read(name):
        try:
            with open(root / name, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, SIDE, SIDE)
            return images, np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
            raise UserError(f"--data-dir {data_dir}: {name} is not a CIFAR-10 python batch ({err})") from None

    parts = [read(name) for name in CIFAR_TRAIN_BATCHES]
    test_x, test_y = read("test_batch")
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y)


def synthetic_images(count: int, seed: int, stream: int):
    """``count`` uint8 images and labels: each class a fixed smooth colour pattern (the same for
    every stream of a seed), each image its class pattern at a random contrast plus noise."""
    import numpy as np
    import torch

    patterns_rng = np.random.default_rng(seed)
    coarse = patterns_rng.standard_normal((CLASSES, 3, 4, 4)).astype(np.float32)
    patterns = torch.from_numpy(coarse.repeat(SIDE // 4, axis=2).repeat(SIDE // 4, axis=3))  # 8x8 blocks
    rng = np.random.default_rng([seed, stream])
    labels = rng.integers(0, CLASSES, size=count)
    contrast = torch.from_numpy(rng.uniform(0.1, 0.6, size=(count, 1, 1, 1)).astype(np.float32))
    noise_rng = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))  # torch's randn is ~5x faster
    images = torch.empty((count, 3, SIDE, SIDE), dtype=torch.uint8)
    for lo in range(0, count, 4096):
        hi = min(lo + 4096, count)
        noise = torch.randn((hi - lo, 3, SIDE, SIDE), generator=noise_rng)
        values = 128 + 64 * (contrast[lo:hi] * patterns[labels[lo:hi]] + noise)
        images[lo:hi] = values.clamp_(0, 255).to(torch.uint8)
    return images.numpy(), labels.astype(np.int64)


class ResNetWorkload(ClassifierWorkload):
    name = "resnet"
    metric_name = "accuracy"
    mode = "max"

    def __init__(self, data_dir: Optional[str] = None, steps_per_epoch: Optional[int] = None,
                 batch_policy: str = "global", data_seed: int = 0, synthetic_train: int = 45000,
                 synthetic_eval: int = 5000, lr_schedule: Optional[str] = None, max_epochs: int = 81):
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            raise UserError(f"steps_per_epoch {steps_per_epoch} must be >= 1")
        self.data_dir = data_dir
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.batch_policy = batch_policy
        self.data_seed = int(data_seed)
        self.synthetic_train, self.synthetic_eval = int(synthetic_train), int(synthetic_eval)
        self.lr_schedule, self.max_epochs = lr_schedule, int(max_epochs)
        if data_dir is not None and not Path(data_dir).expanduser().is_dir():
            raise UserError(f"--data-dir {data_dir} is not a directory")
        self._splits = None

    @property
    def synthetic_data(self) -> bool:
        return self.data_dir is None

    @property
    def data_message(self) -> str:
        if self.synthetic_data:
            return ("resnet: SYNTHETIC CIFAR-10-shaped images (no --data-dir given): timings are real, "
                    "accuracies say nothing about CIFAR-10")
        return f"resnet: CIFAR-10 from {self.data_dir}"

    def search_space(self, seed: Optional[int] = None):
        from ConfigSpace import Categorical, ConfigurationSpace, Float

        space = ConfigurationSpace(seed=seed)
        space.add([
            Categorical("depth", DEPTHS, default=20),
            Categorical("base_channels", BASE_CHANNELS, default=16),
            Float("lr", (1e-3, 0.5), log=True, default=0.1),
            Float("weight_decay", (1e-5, 1e-2), log=True, default=5e-4),
            Categorical("batch_size", BATCH_SIZES, default=128),
            Categorical("optimizer", ("sgd", "adam"), default="sgd"),
        ])
        return space

    def reference_config(self) -> dict:
        return dict(self.search_space().get_default_configuration())

    def train_samples(self, config: dict) -> int:
        if self._splits is not None:
            full = len(self._splits.train_y)
        else:
            full = self.synthetic_train if self.synthetic_data else 50000 - VALIDATION_IMAGES
        batch = int(config["batch_size"])
        steps = full // batch
        if self.steps_per_epoch:
            steps = min(steps, self.steps_per_epoch)
        return steps * batch

    def relative_cost(self, config: dict) -> float:
        """Training multiply-adds of an epoch (forward + backward = 3x forward) over those of
        the reference config. Compute-bound GPUs follow FLOPs; small batches, which use a
        GPU less well, are not modelled."""
        def epoch_macs(c):
            return 3 * multiply_adds(c) * self.train_samples(c)
        return epoch_macs(config) / epoch_macs(self.reference_config())

    def splits(self):
        if self._splits is None:
            import torch

            from .training import TensorSplits

            if self.synthetic_data:
                train_x, train_y = synthetic_images(self.synthetic_train, self.data_seed, 1)
                val_x, val_y = synthetic_images(self.synthetic_eval, self.data_seed, 2)
                test_x, test_y = synthetic_images(self.synthetic_eval, self.data_seed, 3)
            else:
                images, labels, test_x, test_y = load_cifar10(self.data_dir)
                held_out = min(VALIDATION_IMAGES, len(labels) // 10)  # 5,000 of the real 50,000
                train_x, train_y = images[:-held_out], labels[:-held_out]
                val_x, val_y = images[-held_out:], labels[-held_out:]
            self._splits = TensorSplits(*(torch.from_numpy(a) for a in
                                          (train_x, train_y, val_x, val_y, test_x, test_y)))
        return self._splits

    def build_model(self, config: dict):
        return build_resnet(config, augment=not self.synthetic_data)


    def describe(self) -> dict:
        info = super().describe()
        info.update(synthetic_data=self.synthetic_data, data_dir=self.data_dir,
                    steps_per_epoch=self.steps_per_epoch, data=self.data_message)
        return info


def build_resnet(config: dict, augment: bool = False):
    """The ResNet of ``config`` taking uint8 images (normalised and, when training with
    ``augment``, randomly flipped inside the model)."""
    import torch
    import torch.nn as nn

    class Normalize(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255)

        def forward(self, images):
            x = (images.float() - self.mean) / self.std
            if augment and self.training:
                flip = torch.rand(x.shape[0], device=x.device) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            return x

    class BasicBlock(nn.Module):
        def __init__(self, fan_in: int, channels: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(fan_in, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.shortcut = nn.Identity()
            if stride != 1 or fan_in != channels:
                self.shortcut = nn.Sequential(nn.Conv2d(fan_in, channels, 1, stride, bias=False),
                                              nn.BatchNorm2d(channels))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    base = int(config["base_channels"])
    layers = [Normalize(), nn.Conv2d(3, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU()]
    fan_in = base
    for stage, (channels, blocks, _) in enumerate(stage_layout(config)):
        for block in range(blocks):
            layers.append(BasicBlock(fan_in, channels, 2 if stage > 0 and block == 0 else 1))
            fan_in = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(fan_in, CLASSES)]
    return nn.Sequential(*layers)
