"""The two-batch-size noise-scale estimator against problems whose answer is known."""

import math

import numpy as np
import pytest

from nasalloc.profiler.noisescale import (estimate_noise_scale, gaussian_regression_truth, per_step_estimates)


def test_exact_expectations_give_exact_answers():
    # E|G_B|^2 = |G|^2 + tr(Sigma)/B exactly: the estimator must invert it without error.
    grad_sq, trace = 0.5, 40.0
    small, big = 8, 64
    e_small, e_big = grad_sq + trace / small, grad_sq + trace / big
    g, t = per_step_estimates([e_small], [e_big], small, big)
    assert g[0] == pytest.approx(grad_sq) and t[0] == pytest.approx(trace)
    result = estimate_noise_scale([e_small] * 5, [e_big] * 5, small, big)
    assert result.b_noise == pytest.approx(trace / grad_sq)
    assert result.b_noise_ci95[0] == pytest.approx(80.0) and result.b_noise_ci95[1] == pytest.approx(80.0)


def test_ratio_of_means_not_mean_of_ratios():
    # Two steps whose per-step ratios are 1 and 100: the mean ratio would be 50.5.
    small, big = 1, 2
    # per step: g = 2*big_sq - small_sq, t = 2*(small_sq - big_sq)
    steps = [(3.0, 2.0), (101.0, 51.0)]     # (g, t) = (1, 2) and (1, 100)
    result = estimate_noise_scale([s for s, _ in steps], [b for _, b in steps], small, big)
    assert result.grad_sq == pytest.approx(1.0) and result.trace_sigma == pytest.approx(51.0)
    assert result.b_noise == pytest.approx(51.0)


def test_bad_batch_sizes_are_refused():
    with pytest.raises(ValueError):
        per_step_estimates([1.0], [1.0], 8, 8)


def test_linear_regression_with_gaussian_noise_within_tolerance():
    """Real torch gradients of a linear model on fresh Gaussian data: tr(Sigma) and |G|^2
    are known exactly (``gaussian_regression_truth``). 400 steps of 8 micro-batches of 8:
    the estimate lies within 10% of the truth and its 95% bootstrap interval covers it."""
    torch = pytest.importorskip("torch")
    from nasalloc.profiler.noisescale import measure_noise_scale

    dim, noise_var = 10, 1.0
    generator = torch.Generator().manual_seed(3)
    w_star = torch.randn(dim, generator=generator, dtype=torch.float64)
    delta = torch.randn(dim, generator=generator, dtype=torch.float64)
    delta = delta / delta.norm()                               # |w - w*|^2 = 1
    model = torch.nn.Linear(dim, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None, :])

    def draw(n):
        x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
        y = x @ w_star + math.sqrt(noise_var) * torch.randn(n, generator=generator, dtype=torch.float64)
        return x, y

    def loss(out, y):
        return 0.5 * ((out[:, 0] - y) ** 2).mean()

    before = model.weight.detach().clone()
    estimate, norms, seconds = measure_noise_scale(model, loss, draw, batch_small=8, micro_batches=8, steps=400)
    truth = gaussian_regression_truth(1.0, noise_var, dim)            # B_noise = 21
    assert truth["b_noise"] == pytest.approx(21.0)
    assert estimate.b_noise == pytest.approx(truth["b_noise"], rel=0.10)
    assert estimate.trace_sigma == pytest.approx(truth["trace_sigma"], rel=0.10)
    assert estimate.grad_sq == pytest.approx(truth["grad_sq"], rel=0.15)
    low, high = estimate.b_noise_ci95
    assert low < truth["b_noise"] < high
    assert 0 < estimate.b_noise_se < 0.2 * truth["b_noise"]
    assert len(norms["small_sq"]) == 400 and seconds > 0
    assert torch.equal(model.weight, before)                  # measuring does not train


def test_larger_noise_gives_a_larger_noise_scale_with_a_wider_interval_at_fewer_steps():
    rng = np.random.default_rng(0)
    # Simulated squared norms: E|G_B|^2 = 1 + T/B with chi-square-like noise.
    def sample(trace, steps):
        small = (1 + trace / 8) * rng.gamma(20, 1 / 20, steps)
        big = (1 + trace / 64) * rng.gamma(20, 1 / 20, steps)
        return small, big
    few = estimate_noise_scale(*sample(50.0, 20), 8, 64)
    many = estimate_noise_scale(*sample(50.0, 2000), 8, 64)
    assert many.b_noise == pytest.approx(50.0, rel=0.1)
    assert (few.b_noise_ci95[1] - few.b_noise_ci95[0]) > (many.b_noise_ci95[1] - many.b_noise_ci95[0])
