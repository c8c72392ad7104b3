"""Batch-norm kernels (NCHW): per-channel statistics, the affine map, and the backward sums.

Ioffe & Szegedy (2015), as ``conv.BatchNorm2d`` uses them: over the (N, H, W) positions
of each channel c,

    μ_c = mean x,  σ²_c = mean (x - μ_c)²,  y = γ_c (x - μ_c) / sqrt(σ²_c + ε) + β_c
    dβ_c = Σ dy,  dγ_c = Σ dy x̂,  dx = γ_c / σ_c (dy - mean dy - x̂ mean(dy x̂))

Each Numba kernel fuses what NumPy would do in 4-6 passes with temporaries, and has a
NumPy twin ``<name>_numpy``; ``TWINS`` lists them. Per-channel sums run in float64, so a
mean over a whole batch of float32 maps stays exact.

Each works on the channels first .. stop - 1 on the calling thread, without the GIL:
``conv.BatchNorm2d`` hands each of minilottery's pool threads its share of the channels
(threads.run_chunks), the same threads that run the convolutions around it. On Numba's
own threads, which slept through each convolution, every kernel waited 40-150 us for
its second thread to wake on this virtual machine, and a Resnet-18 step has 84 of them.

Each walks a channel's (H, W) plane as one loop over its H * W pixels (contiguous in
NCHW). A loop over a row's W pixels, then the next row, ran partly scalar on small maps:
LLVM's vectorised loop takes 16-32 float32 a round, more than Resnet-18's 8- and 16-pixel
rows. Flat, the four kernels took 1.1-1.8x less time on the 16x16 and 8x8 maps (128
images, 32 and 64 channels; ``benchmarks/bench_batchnorm.py``).

With ``relu`` the kernels also do the ReLU that follows batch norm in Resnet-18 and
VGG-19: the forward writes max(x a + b, 0) (a = γ / σ, b = β - μ a), and the backward
passes dy only where x a + b > 0, recomputed from x in the same float32 operations
rather than read from a stored output. A separate ReLU layer would make two more passes
over the map forward and three backward.
"""
import numpy as np
from . import jit_inline, jit_nogil


@jit_inline
def passed(g, x, a, b, relu, zero):
    """g where a fused ReLU let x a + b through (> 0), else zero; g itself without one."""
    return g if not relu or x * a + b > 0 else zero


def passed_numpy(g, x, a, b, relu):
    return g * (x * a + b > 0) if relu else g


@jit_nogil
def channel_statistics(x, mean, var, first, stop):
    """mean[c] and var[c] (biased) of x[:, c] over (N, H, W), in one pass.

    Sums of d = x - s and d² with s = the channel's first value, so that the variance
    E[d²] - E[d]² does not cancel when |μ| is large against σ; in float64. Half the
    reads of a pass for the mean and another for the variance (Resnet-18's 16-channel
    maps, 128 images: 0.61 -> 0.36 ms).
    """
    n_images, channels, height, width = x.shape
    count, pixels = n_images * height * width, height * width
    x = x.reshape((n_images, channels, pixels))
    for c in range(first, stop):
        shift = x[0, c, 0]
        total, squares = 0.0, 0.0
        for n in range(n_images):
            for p in range(pixels):
                d = x[n, c, p] - shift
                total += d
                squares += d * d
        mean_shifted = total / count
        mean[c], var[c] = shift + mean_shifted, max(squares / count - mean_shifted * mean_shifted, 0.0)


def channel_statistics_numpy(x, mean, var, first, stop):
    mean[first:stop] = x[:, first:stop].mean(axis=(0, 2, 3))
    var[first:stop] = x[:, first:stop].var(axis=(0, 2, 3))


@jit_nogil
def channel_affine(x, scale, shift, relu, y, first, stop):
    """y[:, c] = x[:, c] * scale[c] + shift[c], and max(that, 0) with ``relu``."""
    n_images, channels, height, width = x.shape
    pixels = height * width
    x, y = x.reshape((n_images, channels, pixels)), y.reshape((n_images, channels, pixels))
    zero = y.dtype.type(0)
    for n in range(n_images):
        for c in range(first, stop):
            a, b = scale[c], shift[c]
            for p in range(pixels):
                value = x[n, c, p] * a + b
                y[n, c, p] = zero if relu and value < 0 else value  # NaN stays NaN, as in np.maximum


def channel_affine_numpy(x, scale, shift, relu, y, first, stop):
    part = slice(first, stop)
    y[:, part] = x[:, part] * scale[part, None, None] + shift[part, None, None]
    if relu:
        np.maximum(y[:, part], 0, out=y[:, part])


@jit_nogil
def batchnorm_backward_sums(dy, x, mean, inv_std, scale, shift, relu, sum_dy, sum_dy_xhat, first, stop):
    """sum_dy[c] = sum of g[:, c]; sum_dy_xhat[c] = sum of g[:, c] x̂[:, c], x̂ = (x - μ) inv_std,
    where g = dy, or with ``relu`` dy where x scale + shift > 0 (``passed``) and 0 elsewhere."""
    n_images, channels, height, width = x.shape
    pixels = height * width
    x, dy = x.reshape((n_images, channels, pixels)), dy.reshape((n_images, channels, pixels))
    zero = dy.dtype.type(0)
    for c in range(first, stop):
        mu, s, a, b = mean[c], inv_std[c], scale[c], shift[c]
        total, weighted = 0.0, 0.0
        for n in range(n_images):
            for p in range(pixels):
                value = x[n, c, p]
                g = passed(dy[n, c, p], value, a, b, relu, zero)
                total += g
                weighted += g * ((value - mu) * s)
        sum_dy[c], sum_dy_xhat[c] = total, weighted


def batchnorm_backward_sums_numpy(dy, x, mean, inv_std, scale, shift, relu, sum_dy, sum_dy_xhat, first, stop):
    part = slice(first, stop)
    g = passed_numpy(dy[:, part], x[:, part], scale[part, None, None], shift[part, None, None], relu)
    x_hat = (x[:, part] - mean[part, None, None]) * inv_std[part, None, None]
    sum_dy[part] = g.sum(axis=(0, 2, 3))
    sum_dy_xhat[part] = (g * x_hat).sum(axis=(0, 2, 3))


@jit_nogil
def batchnorm_input_grad(dy, x, mean, inv_std, gamma, scale, shift, relu, mean_dy, mean_dy_xhat, dx, first, stop):
    """dx = γ inv_std (g - mean(g) - x̂ mean(g x̂)), the means over (N, H, W) of channel c,
    with g as in ``batchnorm_backward_sums``."""
    n_images, channels, height, width = x.shape
    pixels = height * width
    x, dy, dx = (x.reshape((n_images, channels, pixels)), dy.reshape((n_images, channels, pixels)),
                 dx.reshape((n_images, channels, pixels)))
    zero = dy.dtype.type(0)
    for n in range(n_images):
        for c in range(first, stop):
            mu, s, factor, m, mx = mean[c], inv_std[c], gamma[c] * inv_std[c], mean_dy[c], mean_dy_xhat[c]
            a, b = scale[c], shift[c]
            for p in range(pixels):
                value = x[n, c, p]
                g = passed(dy[n, c, p], value, a, b, relu, zero)
                dx[n, c, p] = factor * (g - m - (value - mu) * s * mx)


def batchnorm_input_grad_numpy(dy, x, mean, inv_std, gamma, scale, shift, relu, mean_dy, mean_dy_xhat, dx, first, stop):
    part = slice(first, stop)
    g = passed_numpy(dy[:, part], x[:, part], scale[part, None, None], shift[part, None, None], relu)
    x_hat = (x[:, part] - mean[part, None, None]) * inv_std[part, None, None]
    factor = (gamma[part] * inv_std[part])[:, None, None]
    dx[:, part] = factor * (g - mean_dy[part, None, None] - x_hat * mean_dy_xhat[part, None, None])


TWINS = [
    (channel_statistics, channel_statistics_numpy),
    (channel_affine, channel_affine_numpy),
    (batchnorm_backward_sums, batchnorm_backward_sums_numpy),
    (batchnorm_input_grad, batchnorm_input_grad_numpy),
]
