"""The gradient noise scale B_noise = tr(Sigma) / |G|^2 of a model at one point of training.

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training",
Appendix A: for a gradient G_B of the mean loss over B samples drawn independently,
E|G_B|^2 = |G|^2 + tr(Sigma) / B, where G is the true gradient and Sigma the per-example
covariance of the gradient. Two batch sizes B_small < B_big give unbiased estimates

    |G|^2     = (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)

Each step gives one (noisy, possibly negative) pair; as the paper does, B_noise is the ratio
of their means over the steps, not the mean of per-step ratios (which would be biased and
unstable). Its uncertainty is a bootstrap over steps (steps are independent draws).

How the two sizes are obtained: on one rank, a big batch of ``k * B_small`` samples is split
into ``k`` micro-batches; |G_small|^2 is the mean over the micro-batches of their squared
gradient norms and |G_big|^2 the squared norm of their mean (:func:`measure_noise_scale`).
Under DDP the same two numbers are a rank's local gradient and the all-reduced one (not
implemented here: the profiler measures on one rank). Samples are drawn with replacement, so
the independence the estimator assumes holds exactly for the training set's distribution.

The estimate is B_simple of the paper: the optimizer's preconditioning (Adam) and the
Hessian are ignored. Weight decay is not part of the gradient measured (the loss's gradient
only). The arithmetic (:func:`estimate_noise_scale`) is pure numpy; torch is imported only
inside :func:`measure_noise_scale`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

ESTIMATOR = ("two-batch-size unbiased estimator (McCandlish et al. 2018, Appendix A); "
             "B_noise = mean tr(Sigma) / mean |G|^2 over steps; 95% interval: bootstrap over steps")


@dataclass
class NoiseScale:
    b_noise: float                 # tr(Sigma) / |G|^2, NaN when the mean |G|^2 estimate is <= 0
    grad_sq: float                 # mean unbiased estimate of |G|^2
    trace_sigma: float             # mean unbiased estimate of tr(Sigma)
    b_noise_se: float              # bootstrap standard deviation of b_noise
    b_noise_ci95: tuple            # bootstrap 2.5% and 97.5% percentiles
    batch_small: int
    batch_big: int
    steps: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["b_noise_ci95"] = list(self.b_noise_ci95)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def per_step_estimates(small_sq, big_sq, batch_small: int, batch_big: int) -> tuple:
    """Unbiased per-step estimates (|G|^2, tr(Sigma)) from squared norms at the two sizes."""
    small_sq, big_sq = np.asarray(small_sq, float), np.asarray(big_sq, float)
    if not batch_big > batch_small > 0:
        raise ValueError(f"need batch_big > batch_small > 0, got {batch_small}, {batch_big}")
    grad_sq = (batch_big * big_sq - batch_small * small_sq) / (batch_big - batch_small)
    trace = (small_sq - big_sq) / (1.0 / batch_small - 1.0 / batch_big)
    return grad_sq, trace


def _ratio(grad_sq: np.ndarray, trace: np.ndarray) -> float:
    g = float(np.mean(grad_sq))
    return float(np.mean(trace)) / g if g > 0 else math.nan


def estimate_noise_scale(small_sq: Sequence[float], big_sq: Sequence[float], batch_small: int, batch_big: int,
                         bootstrap: int = 2000, seed: int = 0) -> NoiseScale:
    """B_noise from per-step squared gradient norms at ``batch_small`` and ``batch_big``."""
    grad_sq, trace = per_step_estimates(small_sq, big_sq, batch_small, batch_big)
    steps = len(grad_sq)
    if steps == 0:
        raise ValueError("no steps to estimate the noise scale from")
    value = _ratio(grad_sq, trace)
    se, low, high = math.nan, math.nan, math.nan
    if steps > 1 and bootstrap > 0:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, steps, size=(bootstrap, steps))
        g = grad_sq[picks].mean(axis=1)
        t = trace[picks].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(g > 0, t / g, np.inf)  # a resample with no signal: unbounded noise scale
        finite = ratios[np.isfinite(ratios)]
        if finite.size > 1:
            se = float(np.std(finite, ddof=1))
        low, high = (float(x) for x in np.percentile(ratios, [2.5, 97.5]))
    return NoiseScale(b_noise=value, grad_sq=float(np.mean(grad_sq)), trace_sigma=float(np.mean(trace)),
                      b_noise_se=se, b_noise_ci95=(low, high), batch_small=int(batch_small),
                      batch_big=int(batch_big), steps=steps)


def _flat_grad(parameters) -> "object":
    import torch

    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                      for p in parameters])


def measure_noise_scale(model, loss_fn: Callable, draw: Callable[[int], tuple], batch_small: int,
                        micro_batches: int = 8, steps: int = 32, bootstrap: int = 2000,
                        seed: int = 0) -> tuple:
    """Measure B_noise of ``model`` now (its weights are not changed; its gradients are).

    ``draw(n)`` returns ``(inputs, targets)`` of ``n`` independent samples; ``loss_fn(outputs,
    targets)`` the *mean* loss. Each of ``steps`` steps draws ``micro_batches`` micro-batches of
    ``batch_small``. Returns (:class:`NoiseScale`, per-step squared norms as a dict, seconds).
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    small_sq, big_sq = [], []
    began = time.perf_counter()
    for _ in range(steps):
        total, norms = None, []
        for _ in range(micro_batches):
            inputs, targets = draw(batch_small)
            for p in parameters:
                p.grad = None
            loss_fn(model(inputs), targets).backward()
            flat = _flat_grad(parameters).detach().double()
            norms.append(float(flat.dot(flat)))
            total = flat if total is None else total + flat
        mean = total / micro_batches
        small_sq.append(sum(norms) / micro_batches)
        big_sq.append(float(mean.dot(mean)))
    for p in parameters:
        p.grad = None
    seconds = time.perf_counter() - began
    estimate = estimate_noise_scale(small_sq, big_sq, batch_small, batch_small * micro_batches,
                                    bootstrap=bootstrap, seed=seed)
    return estimate, {"small_sq": small_sq, "big_sq": big_sq}, seconds


def sampler_with_replacement(inputs, targets, seed: int) -> Callable[[int], tuple]:
    """``draw(n)``: ``n`` training samples drawn uniformly with replacement (seeded)."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    count = len(targets)

    def draw(n: int) -> tuple:
        index = torch.randint(0, count, (n,), generator=generator).to(targets.device)
        return inputs[index], targets[index]

    return draw


def noise_scale_at(trainer, batch_small: int, micro_batches: int, steps: int, seed: int,
                   bootstrap: int = 2000) -> tuple:
    """Measure a :class:`~nasalloc.workloads.training.ClassifierTrainer`'s model on its
    training set (train mode: dropout is part of the noise, as in training)."""
    import torch

    module = trainer.module
    module.train()
    data = trainer.data
    mean_loss = torch.nn.CrossEntropyLoss(reduction="mean")
    state = torch.get_rng_state()  # the trial's own random stream (dropout) continues as if unmeasured
    try:
        return measure_noise_scale(module, mean_loss, sampler_with_replacement(data.train_x, data.train_y, seed),
                                   batch_small, micro_batches=micro_batches, steps=steps, bootstrap=bootstrap,
                                   seed=seed)
    finally:
        torch.set_rng_state(state)
        trainer.optimizer.zero_grad(set_to_none=True)


def gaussian_regression_truth(w_error_sq: float, noise_var: float, dim: int) -> dict:
    """Exact |G|^2, tr(Sigma), B_noise of linear regression, loss 0.5 (x.w - y)^2, with
    x ~ N(0, I_dim), y = x.w* + eps, eps ~ N(0, noise_var), at weights w with |w - w*|^2 =
    ``w_error_sq``: the per-example gradient is x (x.d - eps), d = w - w*, so G = d and
    Sigma = E[g g^T] - d d^T = (|d|^2 + noise_var) I + d d^T (Isserlis)."""
    trace = dim * (w_error_sq + noise_var) + w_error_sq
    return {"grad_sq": w_error_sq, "trace_sigma": trace, "b_noise": trace / w_error_sq}


def parse_epochs(text: Optional[str]) -> list:
    """'1,9,27' -> [1, 9, 27]; 'none' or '' -> []."""
    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return []
    values = []
    for token in str(text).split(","):
        token = token.strip()
        if not token.isdigit():
            raise ValueError(token)
        values.append(int(token))
    return sorted(set(values))


# -- along training (one rank of a profiling job) ---------------------------------------------

def noise_along_training(trainer, epochs: Sequence[int], micro_batches: int = 8, steps: int = 32, seed: int = 0,
                         echo: Callable[[str], None] = lambda line: None) -> dict:
    """Train ``trainer`` (one rank) up to each of ``epochs`` (0: before training) and measure
    B_noise there with micro-batches of the trainer's global batch. Returns the profile's
    ``noise_scale`` object (docs/formats.md)."""
    batch_small = int(trainer.global_batch)
    points, train_s, measure_s = [], 0.0, 0.0
    metric = None
    for target in sorted(set(int(e) for e in epochs)):
        began = time.perf_counter()
        while trainer.epoch < target:
            metric = trainer.train_epoch().val_metric
        train_s += time.perf_counter() - began
        estimate, _, seconds = noise_scale_at(trainer, batch_small, micro_batches, steps,
                                              seed=seed * 1000 + target)
        measure_s += seconds
        point = {"epoch": target, **estimate.to_dict(), "val_metric": metric, "seconds": seconds}
        points.append(point)
        echo(f"noise scale at epoch {target}: B_noise {estimate.b_noise:.1f} "
             f"[{estimate.b_noise_ci95[0]:.1f}, {estimate.b_noise_ci95[1]:.1f}] ({seconds:.1f} s)")
    return {"schema": NOISE_SCHEMA, "estimator": ESTIMATOR, "method": "micro-batches on one rank",
            "global_batch": batch_small, "batch_small": batch_small, "batch_big": batch_small * micro_batches,
            "micro_batches": micro_batches, "steps": steps, "sampling": "training set, with replacement",
            "points": points, "train_seconds": train_s, "measure_seconds": measure_s}


NOISE_SCHEMA = "nasalloc.noise_scale/1"


def default_epochs(max_epochs: int) -> list:
    """Powers of 3 up to the workload's ``max_epochs`` (81: 1, 3, 9, 27, 81): early to late."""
    out, e = [], 1
    while e <= max(1, int(max_epochs)):
        out.append(e)
        e *= 3
    if out[-1] != max_epochs and max_epochs > 1:
        out.append(int(max_epochs))
    return out


# -- under DDP: a rank's local gradient and the all-reduced one --------------------------------

class DDPNoiseProbe:
    """Collects, per training step of a DDP :class:`ClassifierTrainer`, the squared norm of this
    rank's local gradient (its shard of ``batch / world`` samples, seen in the all-reduce hook
    before the reduction) and of the all-reduced gradient (the whole global batch, read from
    the parameters after ``backward``): the two batch sizes of the estimator, at no extra
    forward or backward pass. Attach with ``trainer.noise_probe = DDPNoiseProbe()``.

    Samples of one step are drawn without replacement (disjoint shards of one permutation), so
    the sizes are exact but the independence the estimator assumes holds only up to the
    finite-population factor (N - B) / (N - 1) of the training set of N samples.
    """

    def __init__(self):
        self.local_sq: list = []
        self.global_sq: list = []
        self._pending = 0.0

    def add_local(self, buffer) -> None:
        """A gradient bucket of this rank, before the all-reduce (called by the comm hook)."""
        self._pending += float(buffer.detach().double().pow(2).sum())

    def end_step(self, module) -> None:
        """After ``backward``: the parameters hold the all-reduced (global-batch mean) gradient."""
        total = 0.0
        for p in module.parameters():
            if p.grad is not None:
                total += float(p.grad.detach().double().pow(2).sum())
        self.local_sq.append(self._pending)
        self.global_sq.append(total)
        self._pending = 0.0

    def estimate(self, ctx, global_batch: int, bootstrap: int = 2000, seed: int = 0) -> Optional[NoiseScale]:
        """Collective: the estimate from every rank's steps (None without steps). |G_small|^2 of a
        step is the mean over ranks of their local squared norms."""
        steps = len(self.global_sq)
        if steps == 0 or ctx.world_size < 2:
            return None
        summed = ctx.all_reduce_sum([float(x) for x in self.local_sq])
        small = [x / ctx.world_size for x in summed]
        return estimate_noise_scale(small, self.global_sq, global_batch // ctx.world_size, global_batch,
                                    bootstrap=bootstrap, seed=seed)
