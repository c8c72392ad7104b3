"""Convolution and pooling kernels (NCHW): im2col / col2im, 2x2 max-pooling, and the direct loop.

The paper's convolutions (its Figure 2 table: 3x3, "same" padding; 2x2 max-pool with
stride 2) are cross-correlations,

    y[n, k, i, j] = b[k] + sum_{c, a, b} w[k, c, a, b] x[n, c, s*i + a - p, s*j + b - p]

``conv2d_direct`` computes exactly that with loops; it is the definition the faster
paths are tested against. Stride-1 3x3 convolutions use Winograd's algorithm
(winograd.py); every other shape (the strided and 1x1 convolutions of Resnet-18)
goes through im2col: the receptive field of each output pixel becomes a column, so
the convolution is one matrix product per image, y[n] = W cols[n], done by BLAS.
Its gradient with respect to x, col2im, sums each column back onto the pixels it
was read from.

Each Numba kernel works in place, runs in parallel over (image, channel) planes,
and has a NumPy twin ``<name>_numpy`` of the same signature; ``TWINS`` lists them.
"""
import numpy as np
from numba import prange

from . import jit, jit_parallel


@jit
def output_size(size, kernel, stride, padding):
    """Number of output positions along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def conv2d_direct(x, w, b, stride=1, padding=1):
    """The definition above, by loops over the kernel taps: x (N, C, H, W), w (K, C, kh, kw)."""
    n_images, _, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = w.shape
    out_h, out_w = output_size(height, kernel_h, stride, padding), output_size(width, kernel_w, stride, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((n_images, out_channels, out_h, out_w), np.result_type(x, w))
    for a in range(kernel_h):
        for c in range(kernel_w):
            window = padded[:, :, a:a + stride * out_h:stride, c:c + stride * out_w:stride]  # (N, C, Ho, Wo)
            y += np.einsum("kc,nchw->nkhw", w[:, :, a, c], window)
    return y + b[:, None, None]


# ----------------------------------------------------------------------------- im2col

@jit_parallel
def im2col(x, cols, kernel_h, kernel_w, stride, padding):
    """cols[n, (c*kh + a)*kw + b, i*Wo + j] = x[n, c, s*i + a - p, s*j + b - p] (0 outside x)."""
    n_images, channels, height, width = x.shape
    out_w = output_size(width, kernel_w, stride, padding)
    out_h = cols.shape[2] // out_w
    zero = x.dtype.type(0)
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        for a in range(kernel_h):
            for b in range(kernel_w):
                row = (c * kernel_h + a) * kernel_w + b
                for i in range(out_h):
                    r = stride * i + a - padding
                    for j in range(out_w):
                        col = stride * j + b - padding
                        inside = 0 <= r < height and 0 <= col < width
                        cols[n, row, i * out_w + j] = x[n, c, r, col] if inside else zero


def im2col_numpy(x, cols, kernel_h, kernel_w, stride, padding):
    n_images, channels, height, width = x.shape
    out_h, out_w = output_size(height, kernel_h, stride, padding), output_size(width, kernel_w, stride, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    view = cols.reshape(n_images, channels, kernel_h, kernel_w, out_h, out_w)
    for a in range(kernel_h):
        for b in range(kernel_w):
            view[:, :, a, b] = padded[:, :, a:a + stride * out_h:stride, b:b + stride * out_w:stride]


@jit_parallel
def col2im(cols, dx, kernel_h, kernel_w, stride, padding):
    """The adjoint of im2col: dx[n, c, r, col] = sum of every cols entry that was read from it."""
    n_images, channels, height, width = dx.shape
    out_w = output_size(width, kernel_w, stride, padding)
    out_h = cols.shape[2] // out_w
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        dx[n, c] = 0
        for a in range(kernel_h):
            for b in range(kernel_w):
                row = (c * kernel_h + a) * kernel_w + b
                for i in range(out_h):
                    r = stride * i + a - padding
                    if 0 <= r < height:
                        for j in range(out_w):
                            col = stride * j + b - padding
                            if 0 <= col < width:
                                dx[n, c, r, col] += cols[n, row, i * out_w + j]


def col2im_numpy(cols, dx, kernel_h, kernel_w, stride, padding):
    n_images, channels, height, width = dx.shape
    out_h, out_w = output_size(height, kernel_h, stride, padding), output_size(width, kernel_w, stride, padding)
    padded = np.zeros((n_images, channels, height + 2 * padding + stride, width + 2 * padding + stride), dx.dtype)
    view = cols.reshape(n_images, channels, kernel_h, kernel_w, out_h, out_w)
    for a in range(kernel_h):
        for b in range(kernel_w):
            padded[:, :, a:a + stride * out_h:stride, b:b + stride * out_w:stride] += view[:, :, a, b]
    dx[...] = padded[:, :, padding:padding + height, padding:padding + width]


# ----------------------------------------------------------------------------- max-pooling

@jit_parallel
def maxpool_forward(x, y, argmax, size):
    """y = max over each size x size window (stride = size); argmax = a*size + b of the winner."""
    n_images, channels, out_h, out_w = y.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        for i in range(out_h):
            for j in range(out_w):
                best, where = x[n, c, size * i, size * j], 0
                for a in range(size):
                    for b in range(size):
                        value = x[n, c, size * i + a, size * j + b]
                        if value > best:
                            best, where = value, a * size + b
                y[n, c, i, j] = best
                argmax[n, c, i, j] = where


def maxpool_forward_numpy(x, y, argmax, size):
    n_images, channels, out_h, out_w = y.shape
    windows = x[:, :, :size * out_h, :size * out_w].reshape(n_images, channels, out_h, size, out_w, size)
    windows = windows.transpose(0, 1, 2, 4, 3, 5).reshape(n_images, channels, out_h, out_w, size * size)
    argmax[...] = windows.argmax(axis=-1)  # the first maximum, like the loop's strict ">"
    y[...] = windows.max(axis=-1)


@jit_parallel
def maxpool_backward(dy, argmax, dx, size):
    """The gradient flows only to each window's maximum; the rest of dx is 0."""
    n_images, channels, out_h, out_w = dy.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        dx[n, c] = 0
        for i in range(out_h):
            for j in range(out_w):
                where = argmax[n, c, i, j]
                dx[n, c, size * i + where // size, size * j + where % size] = dy[n, c, i, j]


def maxpool_backward_numpy(dy, argmax, dx, size):
    n_images, channels, out_h, out_w = dy.shape
    onehot = np.arange(size * size) == argmax[..., None]  # (N, C, Ho, Wo, size*size)
    windows = (onehot * dy[..., None]).reshape(n_images, channels, out_h, out_w, size, size)
    dx[...] = 0
    dx[:, :, :size * out_h, :size * out_w] = windows.transpose(0, 1, 2, 4, 3, 5).reshape(
        n_images, channels, size * out_h, size * out_w)


# ----------------------------------------------------------------------------- batch norm
# Per-channel sums run in float64, so a mean over a whole batch of float32 maps stays exact.

@jit_parallel
def channel_statistics(x, mean, var):
    """mean[c] and var[c] (biased) of x[:, c] over (N, H, W)."""
    n_images, channels, height, width = x.shape
    count = n_images * height * width
    for c in prange(channels):
        total = 0.0
        for n in range(n_images):
            for i in range(height):
                for j in range(width):
                    total += x[n, c, i, j]
        mu = total / count
        squares = 0.0
        for n in range(n_images):
            for i in range(height):
                for j in range(width):
                    squares += (x[n, c, i, j] - mu) ** 2
        mean[c], var[c] = mu, squares / count


def channel_statistics_numpy(x, mean, var):
    mean[...] = x.mean(axis=(0, 2, 3))
    var[...] = x.var(axis=(0, 2, 3))


@jit_parallel
def channel_affine(x, scale, shift, y):
    """y[:, c] = x[:, c] * scale[c] + shift[c]."""
    n_images, channels, height, width = x.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        a, b = scale[c], shift[c]
        for i in range(height):
            for j in range(width):
                y[n, c, i, j] = x[n, c, i, j] * a + b


def channel_affine_numpy(x, scale, shift, y):
    y[...] = x * scale[:, None, None] + shift[:, None, None]


@jit_parallel
def batchnorm_backward_sums(dy, x, mean, inv_std, sum_dy, sum_dy_xhat):
    """sum_dy[c] = sum of dy[:, c]; sum_dy_xhat[c] = sum of dy[:, c] x̂[:, c], x̂ = (x - μ) inv_std."""
    n_images, channels, height, width = x.shape
    for c in prange(channels):
        mu, s = mean[c], inv_std[c]
        total, weighted = 0.0, 0.0
        for n in range(n_images):
            for i in range(height):
                for j in range(width):
                    g = dy[n, c, i, j]
                    total += g
                    weighted += g * ((x[n, c, i, j] - mu) * s)
        sum_dy[c], sum_dy_xhat[c] = total, weighted


def batchnorm_backward_sums_numpy(dy, x, mean, inv_std, sum_dy, sum_dy_xhat):
    x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]
    sum_dy[...] = dy.sum(axis=(0, 2, 3))
    sum_dy_xhat[...] = (dy * x_hat).sum(axis=(0, 2, 3))


@jit_parallel
def batchnorm_input_grad(dy, x, mean, inv_std, gamma, mean_dy, mean_dy_xhat, dx):
    """dx = γ inv_std (dy - mean(dy) - x̂ mean(dy x̂)), the means over (N, H, W) of channel c."""
    n_images, channels, height, width = x.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        mu, s, scale, m, mx = mean[c], inv_std[c], gamma[c] * inv_std[c], mean_dy[c], mean_dy_xhat[c]
        for i in range(height):
            for j in range(width):
                dx[n, c, i, j] = scale * (dy[n, c, i, j] - m - (x[n, c, i, j] - mu) * s * mx)


def batchnorm_input_grad_numpy(dy, x, mean, inv_std, gamma, mean_dy, mean_dy_xhat, dx):
    x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]
    dx[...] = (gamma * inv_std)[:, None, None] * (dy - mean_dy[:, None, None] - x_hat * mean_dy_xhat[:, None, None])


TWINS = [
    (im2col, im2col_numpy),
    (col2im, col2im_numpy),
    (maxpool_forward, maxpool_forward_numpy),
    (maxpool_backward, maxpool_backward_numpy),
    (channel_statistics, channel_statistics_numpy),
    (channel_affine, channel_affine_numpy),
    (batchnorm_backward_sums, batchnorm_backward_sums_numpy),
    (batchnorm_input_grad, batchnorm_input_grad_numpy),
]
